"""A remote model: nnsight's wrapper and the `LoadedModel` the pages read, over ONE module tree.

Why two views: core's analyses and the pages take a `LoadedModel`; nnsight's traces take its own
`TransformersModel`. `RemoteLoadedModel` is a `LoadedModel` (so Architecture, Vocabulary and every
reader of config, tokenizer and parameter shapes work unchanged) whose `.remote` is the
`RemoteModel`: nnsight's wrapper over the same `.model`, where the requests go, and the jobs.
- remote=True / a URL: `.model` is the architecture on the meta device, built by core's own
  loader from the config (no weights read, no memory); requests name the deployment by its
  Hugging Face id (`ndif_model_key`), never a local folder.
- remote="local": `.model` holds the weights, loaded here once; nnsight wraps that same module
  and every request goes through nnsight's local simulation of NDIF (no second copy).

Nothing here loads a model (core.loading.load does, then calls `remote_model`); nnsight is
imported only when a remote model is built. nnsight 0.8.1 names the wrapper
`TransformersModel(..., task="text-generation")`; `LanguageModel` is its deprecated alias.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from core.model.loaded import LoadedModel
from core.remote.connection import Target, resolve_target
from core.remote.errors import RemoteError, host_secret, redact, translate
from core.remote.jobs import DEFAULT_BUDGET, DEFAULT_TIME_LIMIT, Job, JobStats, result_bytes

TASK = "text-generation"
MODEL_CLASS = "nnsight.modeling.transformers.TransformersModel"  # the class NDIF rebuilds (its import path)
_HF_CACHE_FOLDER = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


def ndif_model_key(repo_id: str, revision: str | None = None) -> str:
    """The deployment key NDIF knows a causal LM by, as nnsight 0.8.1's `to_model_key()` writes it.

    Written here because nnsight's own first asks the Hugging Face hub for the canonical id
    (`HfApi().model_info`), which fails offline; tests/test_remote.py checks both give the same string.
    """
    return f"{MODEL_CLASS}:{json.dumps({'repo_id': repo_id, 'revision': revision, 'task': TASK})}"


def repo_id_of_folder(folder: str | Path) -> str | None:
    """The hub id of a snapshot folder inside the Hugging Face cache (…/models--org--name/snapshots/<sha>)."""
    path = Path(folder).resolve()
    for part in (path, *path.parents):
        match = _HF_CACHE_FOLDER.search(part.name)
        if match:
            return f"{match['org']}/{match['name']}"
    return None


@dataclass(eq=False)
class RemoteModel:
    """Where one model's traces run (NDIF, a self-hosted NDIF, or nnsight's simulation), and its jobs."""

    name: str
    target: Target
    nn: object  # nnsight.TransformersModel over lm.model
    lm: LoadedModel  # config, tokenizer, parameter shapes (and the weights for "local")
    repo_id: str | None  # the Hugging Face id NDIF hosts it under (None: "local" without one)
    revision: str | None = None
    last: JobStats | None = None  # the last request's timeline, for Home
    _jobs: set = field(default_factory=set, repr=False)
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return f"RemoteModel({self.name!r}, {self.target!r}, repo_id={self.repo_id!r})"

    __str__ = __repr__

    @property
    def model_key(self) -> str | None:
        return ndif_model_key(self.repo_id, self.revision) if self.repo_id else None

    def describe(self) -> str:
        """Where it runs, in words (Home, provenance); never holds the key."""
        model = f"{self.repo_id} " if self.repo_id else ""
        return f"{model}on {self.target.describe()}"

    def secrets(self) -> tuple[str | None, ...]:
        return self.target.key, host_secret(self.target.host or "")

    # ------------------------------------------------------------ jobs

    def new_job(self, label: str, *, budget: int = DEFAULT_BUDGET, time_limit: float = DEFAULT_TIME_LIMIT,
                grad: bool = False) -> Job:
        """grad: the job runs a backward pass, so the simulation keeps the forward's graph (NDIF decides its own)."""
        job = Job(budget=budget, time_limit=time_limit, label=f"{self.name}: {label}", grad=grad)
        with self._jobs_lock:
            self._jobs.add(job)
        return job

    def backend(self, job: Job):
        """The nnsight backend for `job`: pass it as `nn.session(backend=…)` (one job per page)."""
        return job.backend(self.nn, self.target, self.model_key, lock=self.lm.lock)

    def measured(self, job: Job, values, name: str):
        """`values`, once their bytes are checked against the job's budget. Through NDIF the backend measured
        what crossed the wire; the simulation crosses none, so what NDIF would have sent (torch.save of
        {name: values}, as the server writes the saved values) is measured here."""
        if self.target.is_simulation:
            size = result_bytes({name: values})
            job.check_bytes(size)
            job.stats.bytes_received = size
        return values

    def cancel_all(self) -> None:
        """Stop waiting for every job of this model still in flight (a page was left, the model unloaded)."""
        with self._jobs_lock:
            for job in self._jobs:
                job.cancel()

    def run(self, job: Job, work):
        """`work()` (a session of traces) as `job`: every fault becomes one RemoteError, redacted.

        The error is raised outside the `except` block, so it carries no context chain back to
        nnsight's exception (whose text may hold what a server echoed, e.g. the key).
        """
        error = None
        try:
            job.check()
            result = work()
        except Exception as exc:  # KeyboardInterrupt and Streamlit's stop (BaseException) pass through
            error = translate(exc, host=self.target.host or "the local simulation",
                              model=self.repo_id or self.name, key=self.target.key)
            error = type(error)(redact(error, *self.secrets()), redact(error.details, *self.secrets()))
        finally:
            with self._jobs_lock:
                self._jobs.discard(job)
            outcome = "completed" if error is None else ("cancelled" if job.cancelled else "failed")
            job.finish(outcome)
            self.last = job.stats
        if error is not None:
            raise error
        return result


@dataclass(eq=False)
class RemoteLoadedModel(LoadedModel):
    """A LoadedModel whose forward passes run where `remote` says (core.remote.model.RemoteModel)."""

    remote: RemoteModel | None = field(default=None, repr=False)


def remote_model(lm: LoadedModel, remote, *, key: str | None = None, repo_id: str | None = None,
                 revision: str | None = None, secrets_path: Path | None = None) -> RemoteLoadedModel:
    """`lm` as a RemoteLoadedModel for `remote` (True, a URL, or "local"; core.remote.connection).

    lm: from core.loading.load_model: with weights for "local" (wrapped as it is: same module, same
    lock), on the meta device for True / a URL. repo_id: the Hugging Face id NDIF hosts it under
    (required for True / a URL). Raises RemoteError with a plain message.
    """
    target = resolve_target(remote, key, secrets_path=secrets_path)
    if target is None:
        raise RemoteError("remote=False runs the model here: use the LoadedModel as it is.")
    if target.is_simulation and not lm.has_weights:
        raise RemoteError(f"{lm.name} was loaded from its config only: nnsight's local simulation of NDIF "
                          "runs on a local copy, so it needs the weights.")
    if not target.is_simulation and not repo_id:
        raise RemoteError(f"{lm.name}: NDIF runs the models it hosts, named by their Hugging Face id "
                          "(e.g. meta-llama/Llama-3.1-8B); this source has none. Give the model's hub id.")
    if lm.tokenizer is None:
        raise RemoteError(f"{lm.name} has no tokenizer files: a remote model needs them to turn text into "
                          "token ids here.")
    from nnsight import TransformersModel

    # A copy of the tokenizer: nnsight sets left padding and a pad token on the one it is given.
    # A meta module stays on meta (the pipeline would move it to the CPU, which meta tensors cannot do).
    placement = {} if lm.has_weights else {"device": "meta"}
    try:
        nn = TransformersModel(lm.model, tokenizer=copy.deepcopy(lm.tokenizer), task=TASK, **placement)
    except Exception as error:  # an architecture nnsight cannot wrap: say which
        raise RemoteError(f"{lm.name}: nnsight could not wrap this architecture "
                          f"({type(error).__name__}: {redact(error, target.key)}).") from None
    values = {f.name: getattr(lm, f.name) for f in dataclasses.fields(LoadedModel) if f.init}
    view = RemoteLoadedModel(**values)  # the same module, tokenizer and lock: no second copy
    view.remote = RemoteModel(lm.name, target, nn, view, repo_id, revision)
    return view
