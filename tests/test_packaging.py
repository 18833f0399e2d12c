"""What `pip install .` brings is enough for every module the package imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ai_usage_exporter"

# Imported only where the user opted in: an extra of ours, or the user's own client library
# handed to instrument(). Each is imported lazily, inside the function that needs it.
OPTIONAL = {
    "psycopg": "postgres extra",
    "rich": "cli extra",
    "openai": "the user's client",
    "anthropic": "the user's client",
    "groq": "the user's client",
    "ollama": "the user's client",
    "google": "the user's client (google-genai)",
}

# Imported directly, but always installed as a dependency of a core dependency.
BROUGHT_BY = {"yarl": "aiohttp", "anyio": "starlette"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_level() -> dict[str, str]:
    """Top-level module -> the first file importing it, over every module of the package."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(s) for s in project["dependencies"]}
    dists = packages_distributions()
    missing = []
    for module, where in _imported_top_level().items():
        if module in sys.stdlib_module_names or module == "ai_usage_exporter":
            continue
        if module in OPTIONAL:
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & core and module not in BROUGHT_BY:
            missing.append(f"{module} ({where}; distribution {sorted(names)})")
    assert missing == [], "imported but not a core dependency: " + ", ".join(missing)
