"""The server's caches (core.loading.store): models load once per server, traces are bounded by bytes.

The browser test uses no mock: a real `streamlit run` server, a real browser, and the server's
own log. transformers prints one "Loading weights" progress bar per `from_pretrained`, so the
log counts the loads. While the first model is still loading, the browser clicks a sidebar
toggle off and on again: Streamlit interrupts the running script for each rerun (it raises
inside the script thread), which used to throw the load away and load the model a second time.
Home's memory table must list both models. The unit tests below check the two caches directly.
"""

import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from core import load_model
from core.model.errors import ModelLoadError

from tests.browser import ROOT, SERVER_ENV, browser_page, chromium_path, free_port, wait_until_idle


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


@pytest.mark.browser
@pytest.mark.embedded
@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium-headless-shell")
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


# ---------------------------------------------------------------- the server's caches (core.loading.store)


class _Sized:
    def __init__(self, nbytes):
        self.nbytes = nbytes


def test_trace_cache_is_bounded_by_bytes_least_recently_used_first():
    from core.loading.store import TraceCache

    cache = TraceCache(budget_bytes=100)
    computed = []

    def make(name, size):
        return lambda: computed.append(name) or _Sized(size)

    a = cache.get("a", make("a", 40))
    cache.get("b", make("b", 40))
    assert cache.get("a", make("a", 40)) is a  # a hit, and now the most recently used
    cache.get("c", make("c", 40))  # 120 > 100: the least recently used ("b") goes
    assert computed == ["a", "b", "c"] and cache.nbytes == 80 and len(cache) == 2 and cache.evicted == 1
    cache.get("b", make("b", 40))
    assert computed[-1] == "b"  # recomputed: it had been evicted
    cache.get("huge", make("huge", 1000))  # larger than the whole budget: returned, never kept
    assert cache.nbytes <= 100 and "huge" not in cache._entries
    cache.set_budget(40)
    assert cache.nbytes <= 40 and len(cache) == 1


def test_trace_cache_computes_a_missing_trace_once_for_concurrent_sessions():
    from core.loading.store import TraceCache

    cache, calls, gate = TraceCache(budget_bytes=10**6), [], threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return _Sized(10)

    threads = [threading.Thread(target=cache.get, args=("k", slow)) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_model_store_loads_once_survives_an_interrupted_waiter_and_never_caches_a_failure(tiny_folders):
    from core.loading.store import ModelStore

    started, release = [], threading.Event()

    def load(key, report):
        started.append(key)
        report(0.5, "half way")
        release.wait(5)
        if key == "broken":
            raise ModelLoadError("broken: cannot be read")
        return load_model(str(tiny_folders["llama"]))

    class Interrupted(Exception):
        """What Streamlit raises in a script thread when a rerun interrupts it."""

    def interrupting_progress(fraction, message):
        raise Interrupted(message)

    store = ModelStore(load)
    with pytest.raises(Interrupted, match="half way|Loading|Waiting"):
        store.get("good", interrupting_progress)  # the page stops waiting; the load goes on
    release.set()
    model = store.get("good")
    assert store.get("good") is model and started.count("good") == 1 and store.loads_started["good"] == 1
    with pytest.raises(ModelLoadError, match="cannot be read"):
        store.get("broken")
    assert "broken" not in store.models() and not store.loading()  # nothing half-loaded is kept
    with pytest.raises(ModelLoadError):
        store.get("broken")  # tried again, not a cached failure
    assert started.count("broken") == 2 and store.get("good") is model  # the other model keeps working
