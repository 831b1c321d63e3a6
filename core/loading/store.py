"""The two server-wide caches of the dashboard, Streamlit-free: loaded models and traces.

`ModelStore` loads each model exactly once per server. The load runs in a worker
thread owned by the store; a page's script only waits for it and draws its
progress. Streamlit interrupts a script run by raising inside the script thread
(a rerun after a click, a closed tab); if the load ran in that thread, the model
read so far would be thrown away and loaded again by the next run. Here the
interrupted script stops waiting, the worker finishes, and the next run (of any
session) finds the model, or the same load still in progress. A model enters the
store only when it is completely loaded; a failed load leaves its exception for
the callers that waited on it and nothing in the store.

`TraceCache` holds frozen traces up to a budget of BYTES (not a count: one
512-token trace of Llama 3.2 3B is ~0.5 GB, one of a tiny model a few kB),
evicting the least recently used first. The default budget is a fraction of the
memory free when the server starts.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Hashable

from core.loading.placement import free_ram_bytes

TRACE_BUDGET_FRACTION = 0.25  # of the RAM free at start: traces share memory with the models


@dataclass
class _Load:
    """One model load in progress: its result (or exception) and the last progress report."""

    future: Future = field(default_factory=Future)
    fraction: float = 0.0
    message: str = "Waiting for the other model to finish loading"

    def report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message


class ModelStore:
    """{key: LoadedModel}, at most `max_models`, each loaded once by a worker thread.

    `load(key, progress)` does the work (progress(fraction, message) as it goes).
    `loads_started[key]` counts the loads ever started for a key: 1 per model per
    server unless it was unloaded or failed.
    """

    def __init__(self, load: Callable, max_models: int = 6) -> None:
        self._load = load
        self.max_models = max_models
        self._models: OrderedDict[Hashable, object] = OrderedDict()
        self._loading: dict[Hashable, _Load] = {}
        self._lock = threading.Lock()
        # One load at a time: two at once would double the peak memory, make each fit check read
        # memory the other is about to take, and race inside transformers' lazy imports.
        self._one_load_at_a_time = threading.Lock()
        self.loads_started: Counter = Counter()

    def get(self, key: Hashable, progress: Callable | None = None, poll_seconds: float = 0.1,
            load: Callable | None = None):
        """The model for `key`, loading it if needed; `progress(fraction, message)` is called while waiting.

        `load` replaces the store's loader for a load this call starts (e.g. to pass a token
        that must not be part of the key).

        Raises what the load raised (ModelLoadError, …). An exception raised by `progress`
        itself (Streamlit interrupting the script) leaves the load running.
        """
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)  # recently used: evicted last
                return self._models[key]
            job = self._loading.get(key)
            if job is None:
                job = self._loading[key] = _Load()
                self.loads_started[key] += 1
                threading.Thread(target=self._run, args=(key, job, load or self._load), daemon=True,
                                 name=f"load-{getattr(key, 'source', key)}").start()
        while True:
            try:
                return job.future.result(timeout=poll_seconds)
            except FutureTimeout:
                if progress:  # also the caller's chance to stop waiting (Streamlit raises here)
                    progress(job.fraction, job.message)

    def _run(self, key: Hashable, job: _Load, load: Callable) -> None:
        try:
            with self._one_load_at_a_time:
                job.report(0.0, "Loading")
                model = load(key, job.report)
        except BaseException as error:  # noqa: BLE001 - handed to every waiting caller, never cached
            with self._lock:
                self._loading.pop(key, None)
            job.future.set_exception(error)
            return
        with self._lock:
            self._models[key] = model
            while len(self._models) > self.max_models:  # the least recently used goes; users keep their reference
                self._models.popitem(last=False)
            self._loading.pop(key, None)
        job.future.set_result(model)

    def models(self) -> dict:
        """A snapshot {key: model}, least recently used first."""
        with self._lock:
            return dict(self._models)

    def loading(self) -> dict[Hashable, tuple[float, str]]:
        with self._lock:
            return {key: (job.fraction, job.message) for key, job in self._loading.items()}

    def clear(self) -> None:
        """Forget every loaded model (loads in progress finish and are kept)."""
        with self._lock:
            self._models.clear()


class TraceCache:
    """Values with an `nbytes`, kept up to `budget_bytes` in total, least recently used evicted first.

    `get(key, compute)` computes a missing value once even when several threads ask at once
    (the others wait for it). A value larger than the whole budget is returned but not kept.
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = int(budget_bytes if budget_bytes is not None
                                else free_ram_bytes() * TRACE_BUDGET_FRACTION)
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.evicted = 0

    def get(self, key: Hashable, compute: Callable[[], object]):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:  # one computation per key; later callers find the result
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            try:
                value = compute()
                self._put(key, value)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            return value

    def _put(self, key: Hashable, value) -> None:
        size = int(value.nbytes)
        with self._lock:
            if size > self.budget_bytes:
                return
            self._entries[key] = value
            self.nbytes += size
            self._evict()

    def _evict(self) -> None:
        while self.nbytes > self.budget_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= int(old.nbytes)
            self.evicted += 1

    def set_budget(self, budget_bytes: int) -> None:
        with self._lock:
            self.budget_bytes = int(budget_bytes)
            self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0
