"""The layers hold: import-linter's contracts, no import circle, and the map in the docs.

The circle check reads every import statement, those inside functions and under
`TYPE_CHECKING` included, which is stricter than Python itself needs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "ai_usage_exporter"
NAME = "ai_usage_exporter"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from every import statement."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, is_package) in modules.items():
        base = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    source = anchor + (f".{node.module}" if node.module else "")
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" for a in node.names] + [source]
            for target in targets:
                if target == NAME or target.startswith(NAME + "."):
                    found = owner(target)
                    if found is not None and found != module:
                        graph[module].add(found)
                        break
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_counting_function_local_imports() -> None:
    assert circles(import_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    # A check that cannot fail proves nothing: a two-module and a three-module circle.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert circles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_no_module_imports_the_package_root() -> None:
    # The root is the public API; a module that imports it ties itself to every edge.
    importers = sorted(m for m, deps in import_graph().items() if NAME in deps)
    assert importers == [], importers


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_package_and_top_module_is_placed_in_the_architecture_doc() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith("_") or path.name == "py.typed":
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"`{path.name}/`" in doc, f"{path.name}/ is not placed in docs/architecture.md"
            for module in sorted(path.rglob("*.py")):
                if module.stem.startswith("_"):
                    continue
                # Named itself (`recorder`, `model`), or inside a named sub-folder whose
                # row says what its modules are (`integrations/`, `shapes/`).
                folders = module.relative_to(path).parts[:-1]
                placed = f"`{module.stem}`" in doc or f"`{module.stem}:" in doc
                placed = placed or any(f"`{folder}/`" in doc for folder in folders)
                assert placed, (
                    f"{module.relative_to(PACKAGE)} is not placed in docs/architecture.md"
                )
        elif path.suffix == ".py":
            assert f"`{path.name}`" in doc, f"{path.name} is not placed in docs/architecture.md"


@pytest.mark.parametrize(
    "layer", ["cli", "server", "compose", "recorder", "ledger", "config", "core"]
)
def test_every_layer_of_the_contract_is_in_the_doc(layer: str) -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    contract = (ROOT / "pyproject.toml").read_text()
    assert f'"ai_usage_exporter.{layer}"' in contract
    assert f"`{layer}" in doc
