"""A model loads exactly once per server, even when the first script run is interrupted mid-load.

No mock: a real `streamlit run` server, a real browser, and the server's own log. transformers
prints one "Loading weights" progress bar per `from_pretrained`, so the log counts the loads.
While the first model is still loading, the browser clicks a sidebar toggle off and on again:
Streamlit interrupts the running script for each rerun (it raises inside the script thread),
which used to throw the load away and load the model a second time. Home's memory table ("times loaded") must agree.
"""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.browser import ROOT, SERVER_ENV, browser_page, chromium_path, free_port, wait_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.embedded,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium-headless-shell")]

LOAD_STARTED = "Loading weights:   0%"  # transformers' tqdm bar, once per from_pretrained
LOAD_FINISHED = "Loading weights: 100%"


def _serve(port, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV})
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return process
        except OSError:
            assert process.poll() is None, open(log_path).read()
            time.sleep(0.3)
    process.kill()
    raise TimeoutError("streamlit did not start")


def test_an_interrupted_first_run_does_not_load_the_models_twice(tmp_path):
    port, log_path = free_port(), tmp_path / "server.log"
    process = _serve(port, log_path)
    try:
        with browser_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            # The first model's progress bar is on the page: its load is under way. Switch model A's
            # "Load the weights" off and on again, as a hesitant visitor does: each click asks for a
            # rerun, and Streamlit interrupts the running script for it. Model A's choice ends as it began.
            page.locator('[data-testid="stProgress"]').first.wait_for(timeout=240_000)
            finished_at_click = log_path.read_text().count(LOAD_FINISHED)
            toggle = page.locator('[data-testid="stSidebar"]').get_by_text("Load the weights").first
            toggle.click()
            page.wait_for_timeout(300)
            toggle.click()
            wait_until_idle(page, 300)
            page.get_by_role("link", name="Home").click()
            wait_until_idle(page, 300)
            table = page.locator('[data-testid="stTable"]').last.inner_text()
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    log = log_path.read_text()
    assert finished_at_click < 2, "the click came after both loads ended: nothing was interrupted"
    assert log.count(LOAD_STARTED) == 2, log  # SmolLM2 once, Gemma 3 270M once
    assert log.count(LOAD_FINISHED) == 2
    assert "smollm2-135m" in table and "gemma-3-270m" in table
