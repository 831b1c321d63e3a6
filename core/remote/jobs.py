"""One page's work as one NDIF job: the backend that sends it, watches it and measures what came back.

Why our own backend: nnsight 0.8.1's `RemoteBackend` (blocking mode: a /subscribe websocket for the
status updates, POST /request for the payload, the result inline or from a URL) is used as it is,
with four additions a dashboard needs:
- a stop: `Job.cancel()` (another thread), the caller's own stop (`stop_when`: a page the user
  left) or a deadline ends the wait while the job is queued or running. The status display's `update`/`refresh` are called by the client on every update and
  every 0.1 s of silence, so our stand-in display is where the stop is checked;
- a byte budget, checked from the result's Content-Length before downloading, on its size, and on
  its size once decompressed (read no further than the budget);
- the timeline (queue time, run time, bytes received) for Home;
- the key sent is exactly the one we resolved (nnsight would fall back to its global config).

With remote="local" nnsight's `LocalSimulationBackend` runs the job; the same budget and timings
apply, measured on the values that would have come back (`result_bytes`).
nnsight has no cancel endpoint in 0.8.1: a stopped job may still run on the server; its result is
never read, never cached, and the next run is a new job.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from core.remote.errors import RemoteCancelled, RemoteResultTooLarge, RemoteTimeout, redact

log = logging.getLogger("core.remote")

DEFAULT_BUDGET = 64 * 2**20  # bytes a page may bring back (issue 18)
DEFAULT_TIME_LIMIT = 600.0  # seconds a page waits for its job, queue included
_CHUNK = 128 * 1024
CONNECT_TIMEOUT = 10.0  # seconds to open the websocket (nnsight then polls it every 0.1 s)
_LOCAL_SIMULATION = threading.Lock()  # nnsight's simulation hides sys.modules while it deserializes: one at a time


@dataclass
class JobStats:
    """What Home shows for a remote model's last request."""

    statuses: list[tuple[str, float]] = field(default_factory=list)  # (status, seconds since start)
    queue_seconds: float | None = None  # from received to running (None: not seen)
    run_seconds: float | None = None  # from running to completed
    total_seconds: float | None = None
    bytes_received: int = 0
    outcome: str = "running"  # "completed", "failed", "cancelled"


_STOP = threading.local()  # this thread's "has the caller gone?" predicate (stop_when)


@contextmanager
def stop_when(gone):
    """While inside: a job waited for in this thread also stops as soon as `gone()` is true.

    Why: a dashboard page blocked in NDIF's queue runs no Streamlit call, so Streamlit's own stop
    (the user left the page or changed an input) cannot reach it; the wait checks `gone` every 0.1 s.
    """
    previous = getattr(_STOP, "gone", None)
    _STOP.gone = gone
    try:
        yield
    finally:
        _STOP.gone = previous


_SHIPPED: set[str] = set()  # names of the modules registered with nnsight so far
_SHIPPING = threading.Lock()


def shipping(*modules):
    """nnsight, with `modules` registered to be shipped by value with every request (the server has no
    `core`: a function of ours called inside a remote trace travels with it). Each module is registered once."""
    import nnsight

    with _SHIPPING:
        for module in modules:
            if module.__name__ not in _SHIPPED:
                nnsight.register(module)
                _SHIPPED.add(module.__name__)
    return nnsight


def result_bytes(values) -> int:
    """Bytes of `values` as torch.save writes them: what NDIF sends back for them (before compression)."""
    buffer = io.BytesIO()
    torch.save(values, buffer, pickle_protocol=4)
    return buffer.tell()


class _Watch:
    """Stands in for nnsight's StatusDisplay: records the timeline, ends the wait on a stop or a deadline."""

    def __init__(self, job: Job):
        self.job = job
        self.enabled = True  # makes the client wake every 0.1 s (RemoteBackend.request), so refresh() runs
        self.verbose = False

    def update(self, response) -> None:
        self.job._record(str(getattr(response.status, "value", response.status)))
        self.refresh()

    def refresh(self) -> None:
        self.job.check()


class Job:
    """One request (a session of traces) with a stop, a deadline and a byte budget."""

    def __init__(self, *, budget: int = DEFAULT_BUDGET, time_limit: float = DEFAULT_TIME_LIMIT, label: str = "",
                 grad: bool = False):
        self.budget = int(budget)
        self.grad = bool(grad)  # the job runs a backward pass (`with metric.backward():`): the forward keeps its graph
        self.time_limit = float(time_limit)
        self.label = label
        self._cancel = threading.Event()
        self._started = time.monotonic()
        self.stats = JobStats()

    def __repr__(self) -> str:
        return f"Job({self.label!r}, outcome={self.stats.outcome!r})"

    # ------------------------------------------------------------ stop, deadline, budget

    def cancel(self) -> None:
        """Stop waiting (safe from any thread); the waiting call raises RemoteCancelled."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        gone = getattr(_STOP, "gone", None)
        if gone is not None and gone():
            self._cancel.set()
        if self._cancel.is_set():
            self.stats.outcome = "cancelled"
            raise RemoteCancelled(f"Stopped while waiting for NDIF ({self.label}); nothing was kept. "
                                  "Run it again to start a new job.")
        elapsed = time.monotonic() - self._started
        if elapsed > self.time_limit:
            self.stats.outcome = "failed"
            raise RemoteTimeout(f"The NDIF job ({self.label}) went past its time limit: no result after "
                                f"{self.time_limit:.0f} s (queue included). Try again later or ask for less.")

    def check_bytes(self, size: int) -> None:
        if size > self.budget:
            self.stats.outcome = "failed"
            raise RemoteResultTooLarge(f"The result of {self.label} would be {size / 2**20:.1f} MiB, over this "
                                       f"page's budget of {self.budget / 2**20:.1f} MiB; nothing was kept. "
                                       "Ask for fewer layers, tokens or heads.")

    def _record(self, status: str) -> None:
        now = time.monotonic() - self._started
        self.stats.statuses.append((status, round(now, 4)))
        log.debug("NDIF job %s: %s at %.2f s", self.label, status, now)
        seen = dict((s, t) for s, t in reversed(self.stats.statuses))  # first time of each status
        start = seen.get("RECEIVED", seen.get("QUEUED"))
        running = seen.get("RUNNING", seen.get("DISPATCHED"))
        if start is not None and running is not None:
            self.stats.queue_seconds = running - start
        if running is not None and status == "COMPLETED":
            self.stats.run_seconds = now - running

    def finish(self, outcome: str) -> None:
        self.stats.outcome = outcome
        self.stats.total_seconds = time.monotonic() - self._started

    # ------------------------------------------------------------ backends

    def backend(self, nn_model, target, model_key: str | None, lock=None):
        """The nnsight backend that runs this job for `target` (core.remote.connection.Target).

        `model_key`: the deployment to ask for (core.remote.model.ndif_model_key). `lock`: the
        LoadedModel's lock, held while the simulation runs the shared local module.
        """
        if target.is_simulation:
            return _Simulation(nn_model, self, lock)
        return _ndif_backend(nn_model, target, self, model_key)


class _Simulation:
    """nnsight's LocalSimulationBackend, timed, one at a time (it edits sys.modules while it runs)."""

    def __init__(self, nn_model, job: Job, lock=None):
        from nnsight.intervention.backends.local import LocalSimulationBackend

        self.inner = LocalSimulationBackend(nn_model)
        self.job = job
        self.lock = lock if lock is not None else threading.Lock()

    def __call__(self, tracer) -> None:
        self.job.check()
        with _LOCAL_SIMULATION, self.lock, (torch.enable_grad() if self.job.grad else torch.no_grad()):
            self.job._record("RUNNING")
            self.inner(tracer)
            self.job._record("COMPLETED")


def _ndif_backend(nn_model, target, job: Job, model_key: str):
    import websocket
    from nnsight.intervention.backends.remote import RemoteBackend

    if websocket.getdefaulttimeout() is None:  # else a host that drops packets holds the /subscribe connect forever
        websocket.setdefaulttimeout(CONNECT_TIMEOUT)

    class _Backend(RemoteBackend):
        def finalize(self, content: bytes):
            job.check_bytes(len(content))  # what crossed the wire
            job.stats.bytes_received = len(content)
            if self.compress:  # and what it unpacks to, read no further than the budget (a zstd bomb stops here)
                import zstandard

                content = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(content)).read(job.budget + 1)
                job.check_bytes(len(content))
            return torch.load(io.BytesIO(content), map_location="cpu", weights_only=False)

        def download_result(self, url):
            if isinstance(url, (bytes, bytearray)) or not url:
                return super().download_result(url)
            return self.finalize(_download(url, job))

    backend = _Backend(model_key, host=target.host, api_key=target.key or "",
                       env=nn_model._remoteable_get_env(), blocking=True)
    backend.api_key = target.key or ""  # exactly our key, or none: never nnsight's global one
    backend.display = _Watch(job)
    return backend


def _download(url: str, job: Job) -> bytes:
    """GET the result blob, refusing before (Content-Length) or while (running size) it passes the budget."""
    import httpx

    buffer = io.BytesIO()
    with httpx.Client(timeout=httpx.Timeout(10.0, read=600.0)) as client:
        with client.stream("GET", url) as response:
            response.raise_for_status()
            announced = int(response.headers.get("Content-Length", 0) or 0)
            job.check_bytes(announced)
            for chunk in response.iter_bytes(chunk_size=_CHUNK):
                buffer.write(chunk)
                job.check_bytes(buffer.tell())
                job.check()
    log.debug("NDIF job %s: %d bytes from %s", job.label, buffer.tell(), redact(url.split("?")[0]))
    return buffer.getvalue()
