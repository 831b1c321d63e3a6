"""Many users at once: 10 real browser sessions (websocket clients) against one running server.

One session first visits every page (loading both models and filling the caches).
Then 10 sessions visit every page at the same time. Checks: no exception on any
page, every session sees exactly what the single session saw, and the server's
resident memory grows by at most 5% (one copy of each model, shared).
"""

import asyncio
import time
from pathlib import Path

import psutil
import pytest

from tests.browser import CHROMIUM_ARGS, chromium_path, serve_app

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
PAGES = ["", "architecture", "vocabulary", "embeddings", "hidden_states", "similarity", "logit_lens", "attention"]
SESSIONS = 10


def existing_pages() -> list[str]:
    return [p for p in PAGES if p == "" or list((ROOT / "dashboard" / "views").rglob(f"{p}.py"))]


async def wait_idle(page, timeout: float = 600) -> None:
    deadline, quiet_since = time.time() + timeout, None
    await page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    while time.time() < deadline:
        state = await page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        if state != "notRunning":
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("page still running")


MEMORY_SECTION = "Memory: what this server holds"  # Home's live cache counters differ by design between visits


def shared_text(text: str) -> str:
    """What every session must see identically: the page without Home's live memory section."""
    return text.split(MEMORY_SECTION)[0]


async def settled_text(page, expected: str | None = None) -> str:
    """The page's text once it stops changing.

    The browser draws some elements (tables, charts) from lazily loaded code after the
    script has finished; with ten sessions on two cores that can take seconds. With
    `expected`, wait (bounded) for the page to show it; otherwise for two equal readings.
    """
    previous = None
    for _ in range(120):
        text = shared_text(await page.inner_text('[data-testid="stMain"]'))
        if text == (expected if expected is not None else previous):
            return text
        previous = text
        await asyncio.sleep(1.0)
    return previous


async def visit_every_page(browser, url: str, expected: dict[str, str] | None = None) -> dict[str, str]:
    """One browser session (its own context = its own Streamlit session) through every page."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    # Ten sessions share two CPU cores with the server: allow slow navigations, but bounded.
    context.set_default_timeout(300_000)
    context.set_default_navigation_timeout(300_000)
    page = await context.new_page()
    seen = {}
    for name in existing_pages():
        await page.goto(f"{url}/{name}")
        await wait_idle(page)
        exceptions = await page.locator('[data-testid="stException"]').all_inner_texts()
        assert not exceptions, (name, exceptions)
        seen[name] = await settled_text(page, (expected or {}).get(name))
    await context.close()
    return seen


def server_rss(process: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def streamlit_process(port: int) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "streamlit" in " ".join(cmdline) and str(port) in cmdline:
            return proc
    raise RuntimeError("server process not found")


def test_ten_sessions_at_once_share_one_copy_and_agree():
    from playwright.async_api import async_playwright

    from tests.browser import free_port

    port = free_port()

    async def scenario(url):
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            single = await visit_every_page(browser, url)
            rss_single = server_rss(streamlit_process(port))
            many = await asyncio.gather(*[visit_every_page(browser, url, single) for _ in range(SESSIONS)])
            rss_many = server_rss(streamlit_process(port))
            await browser.close()
            return single, many, rss_single, rss_many

    with serve_app(port) as url:
        single, many, rss_single, rss_many = asyncio.run(scenario(url))

    for session in many:
        for name, text in single.items():
            assert session[name] == text, f"page /{name} differs between sessions"
    growth = rss_many / rss_single - 1
    print(f"server RSS: one session {rss_single / 1e6:.0f} MB, after {SESSIONS} concurrent sessions "
          f"{rss_many / 1e6:.0f} MB ({growth:+.1%})")
    assert growth <= 0.05
