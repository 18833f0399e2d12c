"""The dashboard in real headless Chromium (Debian's package, driven by Playwright) against
a real sidecar process: what a person sees equals what the API says.

Without Chromium or Playwright these tests skip; with CI=true they fail instead. Screenshots
go to test-artifacts/dashboard/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _binaries import in_ci
from _server import ServerProcess
from ai_usage_exporter.core.shapes import TOKEN_FIELDS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
READ = "dashboard-read-token-1f2e3d"
WRITE = "dashboard-write-token-9a8b7c"
READ_HEADERS = {"authorization": f"Bearer {READ}"}
WRITE_HEADERS = {"authorization": f"Bearer {WRITE}"}
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
INSTALL_HINT = "install them: apt-get install chromium && pip install playwright"
# Long enough for a loaded CI machine; the page polls every 2 s.
WAIT_MS = 15_000

EVENTS: list[dict[str, Any]] = [
    {"provider": "openai", "model": "gpt-4o-mini", "service": "support-bot", "agent": "triage",
     "input_tokens": 1200, "output_tokens": 350, "cached_input_tokens": 200, "duration_ms": 1840,
     "idempotency_key": "dash-1"},
    {"provider": "openai", "model": "gpt-4o-mini", "service": "support-bot", "tenant": "acme",
     "input_tokens": 800, "output_tokens": 120, "duration_ms": 920, "idempotency_key": "dash-2"},
    {"provider": "anthropic", "model": "claude-sonnet-4-20250514", "service": "rag",
     "input_tokens": 3000, "output_tokens": 200, "cache_write_tokens": 500,
     "cache_write_1h_tokens": 300, "duration_ms": 400, "status": "error",
     "error_type": "rate_limit", "tool": "search", "idempotency_key": "dash-3"},
    {"provider": "acme", "model": "in-house-7b", "service": "rag", "input_tokens": 5000,
     "output_tokens": 1000, "image_input_tokens": 700, "image_output_tokens": 90,
     "duration_ms": 2500, "idempotency_key": "dash-4"},
]  # fmt: skip
README_EVENT = {
    "provider": "openai", "model": "gpt-4o-mini", "service": "support-bot",
    "input_tokens": 1000, "output_tokens": 500, "duration_ms": 1840, "agent": "triage",
}  # fmt: skip
# Colours app.js draws each chart's first series in, as RGB.
SERIES_RGB = {
    "chart-cost": (37, 99, 235),
    "chart-tokens": (37, 99, 235),
    "chart-requests": (37, 99, 235),
    "chart-duration": (124, 58, 237),
}


# ---------------------------------------------------------------- expected text (en-US)


def money(x: float) -> str:
    if x == 0 or abs(x) >= 1:
        return f"${x:,.2f}"
    if abs(x) < 1e-6:
        return "< $0.000001"
    digits = f"{x:.6f}".rstrip("0")
    return "$" + (digits if len(digits.split(".")[1]) >= 2 else f"{x:.2f}")


def count(n: int) -> str:
    return f"{n:,}"


def pct(x: float) -> str:
    return f"{x * 100:.2f}".rstrip("0").rstrip(".") + "%"


def ms(x: float) -> str:
    return f"{x:,.1f}".removesuffix(".0") + " ms"


# ---------------------------------------------------------------- fixtures


def _require_browser() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed"
    else:
        missing = "" if chromium else "chromium is not on PATH"
    if missing:
        message = f"{missing}: {INSTALL_HINT}"
        if in_ci():
            pytest.fail(f"{message} (CI=true, so this is an error, not a skip)")
        pytest.skip(message)
    assert chromium is not None
    return chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _require_browser()
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[ServerProcess]:
    """A sidecar with read and write tokens, holding EVENTS."""
    db = tmp_path_factory.mktemp("dashboard") / "ledger.db"
    env = {"AI_USAGE_EXPORTER_WRITE_TOKEN": WRITE, "AI_USAGE_EXPORTER_READ_TOKEN": READ}
    server = ServerProcess(db, env=env)
    try:
        r = httpx.post(f"{server.url}/api/usage", json=EVENTS, headers=WRITE_HEADERS)
        assert r.json() == {"accepted": len(EVENTS), "duplicates": 0}
        yield server
    finally:
        server.kill()


class Page:
    """A browser tab that records console errors and every request it makes."""

    def __init__(self, browser: Any, width: int, height: int) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": height},
            locale="en-US",
            timezone_id="UTC",
            accept_downloads=True,
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.set_default_timeout(WAIT_MS)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def value(self, selector: str) -> str:
        return str(self.page.locator(selector).get_attribute("data-value"))

    def wait_requests(self, n: int) -> None:
        self.page.wait_for_function(
            "n => document.getElementById('t-requests').dataset.value === n", arg=str(n)
        )

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def sign_in(self, url: str, token: str = READ) -> None:
        self.page.goto(f"{url}/dashboard")
        self.page.fill("#token", token)
        self.page.click("#signin button[type=submit]")


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    p = Page(browser, 1280, 800)
    try:
        yield p
    finally:
        p.context.close()


def _view(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/metrics", headers=READ_HEADERS)
    r.raise_for_status()
    view: dict[str, Any] = r.json()
    return view


def _assert_totals_match(tab: Page, view: dict[str, Any]) -> None:
    t = view["totals"]
    shown = {
        "#t-requests": count(t["requests"]),
        "#t-errors": f"{count(t['errors'])} error" + ("" if t["errors"] == 1 else "s"),
        "#t-error-rate": pct(t["error_rate"]),
        "#t-tokens": count(t["tokens"]["total_tokens"]),
        "#t-cost": money(t["cost_usd"]["total"]),
        "#t-avg-cost": money(t["average_cost_usd"]),
        "#t-avg-duration": ms(t["average_duration_ms"]),
        "#t-requests-sub": f"unpriced {count(t['unpriced_requests'])}",
    }
    assert {sel: tab.text(sel) for sel in shown} == shown
    raw = {
        "#t-requests": t["requests"],
        "#t-errors": t["errors"],
        "#t-error-rate": t["error_rate"],
        "#t-tokens": t["tokens"]["total_tokens"],
        "#t-cost": t["cost_usd"]["total"],
        "#t-avg-cost": t["average_cost_usd"],
        "#t-avg-duration": t["average_duration_ms"],
    }
    assert {sel: float(tab.value(sel)) for sel in raw} == pytest.approx(raw, rel=1e-12)
    # One chip per token kind the server counts, the newer kinds included.
    assert list(t["tokens"]) == [*TOKEN_FIELDS, "total_tokens"]
    assert tab.page.locator("#token-types .chip").count() == len(TOKEN_FIELDS)
    for field, n in t["tokens"].items():
        if field != "total_tokens":
            chip = tab.page.locator(f'.chip[data-type="{field}"]')
            assert chip.get_attribute("data-value") == str(n), field
    assert tab.text('.chip[data-type="cache_write_1h_tokens"] .k') == "cache write 1h"


# ---------------------------------------------------------------- tests


def test_without_the_token_the_page_shows_sign_in_and_no_data(
    tab: Page, sidecar: ServerProcess
) -> None:
    tab.page.goto(f"{sidecar.url}/")
    assert tab.page.url == f"{sidecar.url}/dashboard"
    assert tab.page.locator("#signin-panel").is_visible()
    assert not tab.page.locator("#content").is_visible()
    tab.page.wait_for_timeout(2500)  # a poll's worth: nothing may be fetched meanwhile
    assert [u for u in tab.requests if "/api/" in u] == []
    assert "in-house-7b" not in tab.page.content()
    assert tab.text("#t-requests") == "–"
    tab.screenshot("signed-out.png")
    assert tab.errors == []


def test_totals_equal_the_json_view_and_a_new_call_shows_without_reload(
    tab: Page, sidecar: ServerProcess
) -> None:
    tab.sign_in(sidecar.url)
    view = _view(sidecar.url)
    tab.wait_requests(view["totals"]["requests"])
    _assert_totals_match(tab, view)
    # The token lives in the tab's session storage, never in the address.
    assert READ not in tab.page.url
    stored = tab.page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [READ]
    assert tab.page.locator("#h-ledger .v").inner_text() == "sqlite, writable"
    assert tab.page.locator("#empty").is_hidden()
    models = tab.page.locator("#b-model tbody tr td:first-child").all_inner_texts()
    assert models == [f"{m['provider']} / {m['model']}" for m in view["by_model"]]
    unpriced = tab.page.locator("#b-unpriced tbody tr td:nth-child(2)").all_inner_texts()
    assert unpriced == [m["model"] for m in view["unpriced_models"]] == ["in-house-7b"]
    reasons = tab.page.locator("#b-unpriced tbody tr td:nth-child(3)").all_inner_texts()
    assert reasons == ["unknown model"]
    assert [m["reason"] for m in view["unpriced_models"]] == ["unknown_model"]
    tab.screenshot("desktop-1280x800.png")

    tab.page.evaluate("() => { window.notReloaded = true; }")
    new = {**README_EVENT, "idempotency_key": "dash-live"}
    r = httpx.post(f"{sidecar.url}/api/usage", json=new, headers=WRITE_HEADERS)
    assert r.json() == {"accepted": 1, "duplicates": 0}
    tab.wait_requests(view["totals"]["requests"] + 1)
    assert tab.page.evaluate("() => window.notReloaded") is True
    view = _view(sidecar.url)
    # The page may be a poll behind the view for fields other than the count.
    tab.page.wait_for_function(
        "c => document.getElementById('t-cost').dataset.value === c",
        arg=str(view["totals"]["cost_usd"]["total"]),
    )
    _assert_totals_match(tab, view)
    assert tab.errors == []


def test_charts_have_drawn_the_windows_data(tab: Page, sidecar: ServerProcess) -> None:
    tab.sign_in(sidecar.url)
    tab.page.wait_for_function(
        "() => Number(document.getElementById('chart-requests').dataset.total) > 0"
    )
    view = _view(sidecar.url)
    t = view["totals"]
    totals = {
        fig: float(str(tab.page.locator(f"#{fig}").get_attribute("data-total")))
        for fig in SERIES_RGB
    }
    # Every event was posted within the hour the page shows by default.
    assert totals["chart-cost"] == pytest.approx(t["cost_usd"]["total"])
    assert totals["chart-requests"] == t["requests"] + t["errors"]
    assert totals["chart-tokens"] == sum(v for k, v in t["tokens"].items() if k != "total_tokens")
    assert totals["chart-duration"] > 0
    for fig, rgb in SERIES_RGB.items():
        assert tab.page.locator(f"#{fig} canvas").count() == 1, fig
        assert tab.page.locator(f"#{fig} .chart-empty").is_hidden(), fig
        # Pixels in the first series' colour: the data was drawn, not only the axes.
        drawn = tab.page.evaluate(
            """([id, rgb]) => {
                const c = document.querySelector('#' + id + ' canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) {
                  if (Math.abs(d[i] - rgb[0]) < 30 && Math.abs(d[i + 1] - rgb[1]) < 30 &&
                      Math.abs(d[i + 2] - rgb[2]) < 30 && d[i + 3] > 200) n++;
                }
                return n;
            }""",
            [fig, list(rgb)],
        )
        assert drawn > 10, fig
    # Units on every axis.
    axes = {fig: tab.page.locator(f"#{fig}").get_attribute("data-axes") for fig in SERIES_RGB}
    assert axes == {
        "chart-cost": "time (local)|USD per minute",
        "chart-tokens": "time (local)|tokens per minute",
        "chart-requests": "time (local)|requests per minute",
        "chart-duration": "time (local)|ms",
    }
    tab.page.click('#windows button[data-window="24h"]')
    tab.page.wait_for_function(
        "() => document.getElementById('chart-requests').dataset.points === '25'"
    )
    assert tab.page.locator("#window-label").inner_text() == "24 hours"
    assert tab.errors == []


def test_export_downloads_the_report_apis_csv(tab: Page, sidecar: ServerProcess) -> None:
    tab.sign_in(sidecar.url)
    tab.wait_requests(_view(sidecar.url)["totals"]["requests"])
    with tab.page.expect_download() as info:
        tab.page.click('#b-model .exports button[data-format="csv"]')
    download = info.value
    assert download.suggested_filename == "ai-usage-models-all-time.csv"
    got = Path(download.path()).read_text()
    expected = httpx.get(
        f"{sidecar.url}/api/reports/models?format=csv&limit=10000&since=0", headers=READ_HEADERS
    )
    assert got == expected.text
    rows = list(csv.DictReader(io.StringIO(got)))
    requests = {(r["provider"], r["model"]): int(r["requests"]) for r in rows}
    view = _view(sidecar.url)
    assert requests == {(m["provider"], m["model"]): m["requests"] for m in view["by_model"]}

    # The window's export asks the report API for exactly the window on screen.
    with (
        tab.page.expect_response(lambda r: "/api/reports/daily" in r.url) as resp,
        tab.page.expect_download() as info,
    ):
        tab.page.click('#window-exports button[data-report="daily"][data-format="json"]')
    asked = resp.value.url
    assert info.value.suggested_filename.startswith("ai-usage-daily-")
    body = Path(info.value.path()).read_text()
    assert body == httpx.get(asked, headers=READ_HEADERS).text
    # Whole UTC days for the daily report, so each row is one day.
    params = httpx.URL(asked).params
    since, until = (datetime.fromisoformat(params[k]) for k in ("since", "until"))
    assert since.time() == until.time() == dt_time(0, 0)
    assert until - since in (timedelta(days=1), timedelta(days=2))
    rows = json.loads(body)["rows"]
    assert len(rows) == len({r["day"] for r in rows}) >= 1
    # The other reports: the charts' window in whole minutes (the 1 h window's step).
    shown = tab.page.locator("#export-range").inner_text().split(" to ")
    start, end = (datetime.fromisoformat(t) for t in shown)
    assert (start.second, end.second) == (0, 0)
    # 61 minutes, or 60 when the hour happened to end on a whole minute.
    assert end - start in (timedelta(minutes=60), timedelta(minutes=61))
    assert tab.errors == []


def test_phone_width_fits_without_sideways_scrolling(browser: Any, sidecar: ServerProcess) -> None:
    tab = Page(browser, 390, 844)
    try:
        tab.sign_in(sidecar.url)
        tab.page.wait_for_function(
            "() => Number(document.getElementById('chart-cost').dataset.total) > 0"
        )
        width = tab.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390
        tab.screenshot("phone-390.png")
        assert tab.errors == []
    finally:
        tab.context.close()


def test_a_wrong_token_returns_to_sign_in(tab: Page, sidecar: ServerProcess) -> None:
    tab.sign_in(sidecar.url, token="not-the-token")
    tab.page.wait_for_selector("#signin-panel:not([hidden])")
    assert "not accepted" in tab.text("#signin-error")
    assert tab.page.evaluate("() => sessionStorage.length") == 0
    assert not tab.page.locator("#content").is_visible()
    # Chromium logs the refused request itself; nothing else may go wrong.
    assert all("401" in e for e in tab.errors), tab.errors


def test_an_empty_open_sidecar_says_what_to_do_then_shows_the_first_call(
    tab: Page, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "empty.db")
    try:
        tab.page.goto(f"{server.url}/dashboard")
        # No read token on loopback: the page opens without asking.
        tab.page.wait_for_selector("#empty:not([hidden])")
        assert tab.page.locator("#signin-panel").is_hidden()
        curl = tab.text("#curl-example")
        assert curl.startswith(f"curl -s {server.url}/api/usage")
        assert tab.page.locator("#chart-cost .chart-empty").is_visible()
        assert "No calls in the last hour" in tab.text("#chart-cost .chart-empty")
        assert tab.text("#b-service td.none") == "no calls yet"
        assert tab.text("#h-last .v") == "none yet"
        tab.screenshot("empty.png")
        # The README's first curl example, then the count and cost change on screen.
        r = httpx.post(f"{server.url}/api/usage", json=README_EVENT)
        assert r.json() == {"accepted": 1, "duplicates": 0}
        tab.wait_requests(1)
        view = _view(server.url)
        assert tab.text("#t-cost") == money(view["totals"]["cost_usd"]["total"]) != "$0.00"
        assert tab.page.locator("#empty").is_hidden()
        assert tab.errors == []
    finally:
        server.kill()


def test_budgets_show_when_the_view_has_them(tab: Page, sidecar: ServerProcess) -> None:
    budgets = [
        {"budget": "monthly", "scope": "service", "key": "rag", "period": "month",
         "unit": "usd", "limit": 50.0, "used": 12.5, "remaining": 37.5,
         "hours_to_exhaustion": 30.0},
        {"budget": "daily-tokens", "scope": "global", "key": "", "period": "day",
         "unit": "tokens", "limit": 1_000_000.0, "used": 250_000.0, "remaining": 750_000.0,
         "hours_to_exhaustion": None},
    ]  # fmt: skip

    def with_budgets(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "budgets": budgets})

    tab.page.route("**/api/metrics?limit=20", with_budgets)
    tab.sign_in(sidecar.url)
    tab.page.wait_for_selector("#b-budgets:not([hidden])")
    rows = [
        r.locator("td").all_inner_texts() for r in tab.page.locator("#b-budgets tbody tr").all()
    ]
    assert rows == [
        ["monthly", "service rag", "month", "$12.50", "$50.00", "25%", "$37.50", "1 d"],
        ["daily-tokens", "global", "day", "250,000 tokens", "1,000,000 tokens", "25%",
         "750,000 tokens", "not at this rate"],
    ]  # fmt: skip
    assert tab.errors == []


def test_the_scope_switch_asks_for_the_fleet(tab: Page, sidecar: ServerProcess) -> None:
    tab.sign_in(sidecar.url)
    tab.wait_requests(_view(sidecar.url)["totals"]["requests"])
    assert all("scope=" not in u for u in tab.requests if "/api/" in u)  # the default
    with tab.page.expect_response(lambda r: "/api/metrics?" in r.url and "scope=fleet" in r.url):
        tab.page.click('#scopes button[data-scope="fleet"]')
    fleet = httpx.get(f"{sidecar.url}/api/metrics?scope=fleet", headers=READ_HEADERS).json()
    tab.wait_requests(fleet["totals"]["requests"])
    _assert_totals_match(tab, fleet)
    asked = [u for u in tab.requests if "/api/metrics/timeseries" in u and "scope=fleet" in u]
    assert len(asked) >= 5  # every chart of the refresh
    with tab.page.expect_response(lambda r: "/api/reports/models" in r.url) as resp:
        with tab.page.expect_download():
            tab.page.click('#b-model .exports button[data-format="csv"]')
    assert httpx.URL(resp.value.url).params["scope"] == "fleet"
    assert tab.page.locator('#scopes button[data-scope="fleet"]').get_attribute("class") == "active"
    assert tab.errors == []
