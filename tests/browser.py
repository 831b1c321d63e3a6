"""Drive the running dashboard in a real browser: Debian's chromium-headless-shell + Playwright.

`playwright install` cannot download browsers here, so Playwright is pointed at
the Debian binary (`executable_path`). Used by the browser tests, the benchmarks
and by hand:  python -m tests.browser /attention shot.png
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ["/usr/bin/chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium"]
# Without these, Chromium tries to reach Google services; this machine's closed network refuses them.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# As `make run` starts the server: each session's script thread would otherwise get its own
# glibc malloc arena, and freed memory stays resident per arena (RSS grows with sessions).
SERVER_ENV = {"MALLOC_ARENA_MAX": "2"}


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium-headless-shell")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(port: int | None = None, timeout: float = 120, env: dict | None = None,
              script: str | Path = "dashboard/Home.py"):
    """Start `streamlit run <script>` (the dashboard by default) on localhost:port; yield the base URL; stop it."""
    port = port or free_port()
    log = open(ROOT / "artifacts" / f"streamlit-{port}.log", "w") if (ROOT / "artifacts").is_dir() else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"streamlit exited with code {process.returncode}")
                time.sleep(0.5)
        else:
            raise TimeoutError(f"streamlit did not answer on {url} within {timeout} s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1000):
    """A Playwright page in headless Chromium; console errors are collected in page.console_errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.console_errors = []
        # A deep link (/attention) makes Streamlit's frontend probe <page>/_stcore/health and
        # host-config before it finds the server root; those two 404s are expected, not errors.
        probes = []
        page.on("response", lambda r: probes.append(r.url) if r.status == 404 and "/_stcore/" in r.url else None)

        def on_console(msg):
            if msg.type != "error":
                return
            if msg.text.startswith("Failed to load resource") and "404" in msg.text and probes:
                probes.pop()
                return
            page.console_errors.append(msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: page.console_errors.append(str(error)))
        try:
            yield page
        finally:
            browser.close()


def script_state(page) -> str:
    return page.get_attribute('[data-testid="stApp"]', "data-test-script-state") or "initial"


def wait_until_idle(page, timeout: float = 180) -> None:
    """Wait until Streamlit has finished running the script.

    Streamlit marks its root element with data-test-script-state (initial,
    running, notRunning, ...); it must read notRunning for a second in a row,
    so that a rerun started by the page itself is waited for too.
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        if script_state(page) != "notRunning":
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the app was still running after {timeout} s")


def screenshot(page, path) -> None:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to its height first."""
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stSidebarContent\"]')).map(e => e.scrollHeight), 800)")
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 16000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": width, "height": 1000})


def open_page(url: str, png: str | Path | None = None, timeout: float = 180, full_page: bool = True):
    """Open url, wait for the app to settle, optionally save a full-page screenshot.

    Returns (exception texts shown on the page, console errors).
    """
    with browser_page() as page:
        page.goto(url)
        wait_until_idle(page, timeout)
        exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
        if png:
            screenshot(page, png) if full_page else page.screenshot(path=str(png))
        return exceptions, list(page.console_errors)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "/"
    out = sys.argv[2] if len(sys.argv) > 2 else "screenshot.png"
    port = int(sys.argv[3]) if len(sys.argv) > 3 else None
    with serve_app(port) as base:
        print(open_page(base + path, out))
