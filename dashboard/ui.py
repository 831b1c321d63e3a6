"""What every page shares: cached models and traces, the two slots, side-by-side columns, CSV downloads.

Caching rules (Streamlit's conventions):
- `cached_model` keeps each loaded model once per plain key (pickers.ModelKey: source, weights, dtype,
  placement, NDIF target) in a store held by st.cache_resource; A and B picking the same model share
  one copy. Loads run in the store's worker thread (core.loading.store).
- `cached_trace` holds one frozen `Trace` per (model, prompt) in a cache bounded by
  bytes (st.cache_resource). It is a resource, not data, because traces are read-only
  NumPy arrays of tens of MB: st.cache_data would unpickle a copy on every rerun.
- Small results (DataFrames) use st.cache_data in the page modules.
Every input that changes a view is mirrored in the URL query string (inputs.py), so a copied link
reproduces the view. The sidebar's pickers are in pickers.py; pages reach both through `ui`.

Pages that do not run remote models (NDIF, core.remote) get that model's slot as a plain note
(`page_slots`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from core import LoadedModel, ModelLoadError, Trace, load_model, run_trace
from core.loading.store import ModelStore, TraceCache
from core.loading.placement import size_text
from core.remote.errors import redact
from core.remote.model import RemoteLoadedModel
from core.running.lens_page import PromptTokens, prompt_tokens
# The URL-bound widgets and the sidebar pickers have modules of their own; the pages reach them as ui.*.
from inputs import (bound_value, number_input, preset_buttons, preset_row, remember_in_url,  # noqa: F401
                    selectbox, slider, text_input)
from pickers import REMOTE, ModelKey, model_pickers, typed_ndif_key  # noqa: F401



@dataclass
class Slot:
    """One side of the comparison: 'A' or 'B', what was picked, and the model or the reason it failed.

    notice: `error` is a plain note, not a failure (a remote model on a page that cannot run it yet).
    """

    label: str
    key: ModelKey
    lm: LoadedModel | None
    error: str | None
    notice: bool = False

    @property
    def title(self) -> str:
        """"Model A: <name>", short enough for a column header or a chart legend."""
        return f"Model {self.label}: {short_name(self.key.source)}"


def short_name(source: str) -> str:
    """A preset or hub id as typed; a local folder or .gguf file by its own name (the sidebar has the path)."""
    path = Path(source).expanduser()
    local = source.startswith(("/", "~", ".")) or path.suffix == ".gguf"
    return path.name if local and path.name else source


# ---------------------------------------------------------------- caches


def _secret_token() -> str | None:
    try:
        return st.secrets.get("HF_TOKEN")
    except Exception:  # no secrets.toml: fine, the token may come from HF_TOKEN or `hf auth login`
        return None


MAX_MODELS = 6
TRACE_BUDGET_ENV = "LMSBS_TRACE_CACHE_BYTES"  # settable budget of the trace cache (bytes); else a share of free RAM


def _load(key: ModelKey, progress, token: str | None = None, ndif_key: str | None = None) -> LoadedModel:
    dtype = None if key.dtype == "auto" else key.dtype
    if key.is_remote:  # the simulation loads the weights here ("auto" placement); NDIF builds on meta
        return load_model(key.source, dtype=dtype, token=token, progress=progress, device_map="auto",
                          remote=True if key.remote == "ndif" else key.remote, ndif_key=ndif_key,
                          ndif_repo_id=key.ndif_repo_id or None)
    return load_model(key.source, weights=key.weights, dtype=dtype, token=token, progress=progress,
                      device_map=key.placement)


@st.cache_resource
def model_store() -> ModelStore:
    """The models of this server, shared by every session (core.loading.store.ModelStore).

    Held by st.cache_resource rather than a cached load function: loading draws a
    progress bar, and Streamlit replays elements drawn inside a cached function into
    later sessions. The store loads in its own worker thread, so a rerun that
    interrupts this script mid-load does not throw the load away (each model loads
    exactly once per server), and nothing half-loaded is ever stored.
    """
    return ModelStore(_load, max_models=MAX_MODELS)


def cached_model(key: ModelKey, progress=None) -> LoadedModel:
    token, ndif_key = _secret_token(), typed_ndif_key(key)
    return model_store().get(key, progress, load=lambda k, report: _load(k, report, token, ndif_key))


@st.cache_resource
def trace_store() -> TraceCache:
    """Frozen traces of this server, bounded by bytes, least recently used evicted (core.loading.store.TraceCache).

    A resource, not data: traces are read-only NumPy arrays of up to hundreds of MB, and
    st.cache_data would unpickle a copy on every rerun.
    """
    budget = os.environ.get(TRACE_BUDGET_ENV)
    return TraceCache(int(float(budget)) if budget else None)


def unload_models() -> None:
    model_store().clear()
    trace_store().clear()


def cached_trace(key: ModelKey, prompt: str) -> Trace:
    return trace_store().get((key, prompt), lambda: run_trace(cached_model(key), prompt))


def cache_contents() -> tuple[pd.DataFrame, str]:
    """What the caches hold: one row per loaded model (bytes, placement, loads), and the traces in words."""
    store, traces = model_store(), trace_store()
    rows = [{"model": key.source, "weights": "yes" if lm.has_weights else "config only",
             "dtype": str(lm.dtype).removeprefix("torch."), "device": lm.device,
             "size": size_text(lm.weight_bytes) if lm.has_weights else "0 (meta device)",
             "placement": placement_text(lm), "times loaded": store.loads_started[key]}
            for key, lm in store.models().items()]
    rows += [{"model": key.source, "weights": "loading…", "placement": message,
              "times loaded": store.loads_started[key]}
             for key, (_, message) in store.loading().items()]
    words = (f"Traces: {len(traces)} cached, {size_text(traces.nbytes)} of a {size_text(traces.budget_bytes)} "
             f"budget ({traces.evicted} evicted so far, least recently used first).")
    return pd.DataFrame(rows), words


def placement_text(lm: LoadedModel) -> str:
    if isinstance(lm, RemoteLoadedModel) and lm.remote is not None:
        return f"runs on {lm.remote.target.describe()}"
    return lm.plan.describe() if lm.plan is not None else f"all on {lm.device}"


def trace_budget_gib() -> float:
    return round(trace_store().budget_bytes / 2**30, 2)


def set_trace_budget_gib(gib: float) -> None:
    if abs(gib - trace_budget_gib()) > 1e-9:
        trace_store().set_budget(int(gib * 2**30))


def trace_for(slot: Slot, prompt: str) -> Trace:
    with st.spinner(f"Running {short_name(slot.key.source)} on the prompt…"):
        return cached_trace(slot.key, prompt)


@st.cache_data(max_entries=64, show_spinner=False)
def _prompt_tokens(key: ModelKey, prompt: str) -> PromptTokens:
    return prompt_tokens(cached_model(key), prompt)


def tokens_for(slot: Slot, prompt: str, spinner: bool = True):
    """The prompt as this model cuts it: its cached Trace here, or, for a remote model, the local tokenizer's
    tokens (core.running.lens_page.PromptTokens: no job, so pickers and notes work before anything is sent)."""
    if remote_of(slot.lm) is not None:
        return _prompt_tokens(slot.key, prompt)
    return trace_for(slot, prompt) if spinner else cached_trace(slot.key, prompt)


# ---------------------------------------------------------------- URL-bound inputs


def placement_caption(slot: Slot) -> str | None:
    """Where the slot's weights went, in plain words (None before a model with weights is loaded)."""
    remote = remote_of(slot.lm)
    if remote is not None:  # its forward passes run there, whatever holds the weights here
        return f"Model {slot.label} runs on {remote.target.describe()}: each page sends it one request."
    plan = getattr(slot.lm, "plan", None)
    return f"Model {slot.label}: {plan.describe()}" if plan is not None else None


def load_slots(keys: tuple[ModelKey, ModelKey]) -> list[Slot]:
    """Load both models (cached), with a progress bar the first time; failures become messages."""
    slots = []
    for label, key in zip(("A", "B"), keys):
        if not key.source:
            slots.append(Slot(label, key, None, "No model chosen: type a hub id, folder or .gguf file."))
            continue
        if key.is_remote and not key.remote:
            slots.append(Slot(label, key, None, f"Model {label} runs on a self-hosted NDIF: type its address "
                                                "under 'Where to put each model' in the sidebar."))
            continue
        bar = st.empty()

        def progress(fraction: float, message: str, bar=bar, label=label) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=f"Model {label}: {message}")

        try:
            slots.append(Slot(label, key, cached_model(key, progress), None))
        except ModelLoadError as error:  # core redacts the key; said again here, whatever the message
            slots.append(Slot(label, key, None, redact(error, typed_ndif_key(key))))
        bar.empty()
    with st.sidebar:  # the placement plan, under the pickers
        for caption in filter(None, map(placement_caption, slots)):
            st.caption(caption)
    return slots


def remote_of(lm: LoadedModel | None):
    """The core.remote.model.RemoteModel of a remote model (None for a model that runs here)."""
    return lm.remote if isinstance(lm, RemoteLoadedModel) else None


def runs_text(slot: Slot) -> bool:
    """Whether this slot's model can run text: its weights are here, or it runs remotely."""
    return slot.lm is not None and (slot.lm.has_weights or remote_of(slot.lm) is not None)


def page_slots(slots: list[Slot], runs_remote: bool) -> list[Slot]:
    """The slots a page gets: on a page that does not run remote models, a remote one becomes a plain note.

    Every page already draws a slot without a model as its message in that model's column, so
    this one place covers them all.
    """
    if runs_remote:
        return slots
    out = []
    for slot in slots:
        remote = remote_of(slot.lm)
        if remote is None:
            out.append(slot)
            continue
        where = "" if remote.target.mode == "ndif" else f" (here: {remote.target.describe()})"
        out.append(Slot(slot.label, slot.key, None,
                        f"Model {slot.label} runs on NDIF; this page does not run remote models yet{where}. "
                        "Home, Architecture and Vocabulary work with it; to use this page, pick another "
                        "place under 'Where to put each model' in the sidebar.", notice=True))
    return out


def current_slots() -> list[Slot]:
    """The two slots chosen in the sidebar (set by the entry script before the page runs)."""
    return st.session_state["_slots"]


# ---------------------------------------------------------------- layout helpers


def side_by_side(render, slots: list[Slot] | None = None, need_weights: bool = False) -> None:
    """Call render(slot) in two columns, A left and B right.

    A model that failed to load, or an exception inside one column, becomes a
    message in that column only: the other model keeps working.
    """
    slots = slots if slots is not None else current_slots()
    for column, slot in zip(st.columns(2, gap="large"), slots):
        with column:
            st.subheader(slot.title)
            if slot.lm is None:
                (st.info if slot.notice else st.error)(slot.error)
                continue
            if need_weights and not slot.lm.has_weights and remote_of(slot.lm) is None:  # a remote model runs text
                st.info(f"{short_name(slot.key.source)} is loaded from its config only: turn on 'Load the weights' "
                        "in the sidebar to run text through it.")
                continue
            try:
                render(slot)
            except (ValueError, KeyError, ModelLoadError) as error:
                st.error(str(error))


def attempt(ask):
    """ask(), or the error it raised: a data module keeps a model's failure for the run, so each view of
    it shows the same message and the failed job is not sent again by the next view."""
    try:
        return ask()
    except (ValueError, KeyError, ModelLoadError, RuntimeError) as error:
        return error


def outcome(value):
    """What `attempt` kept: the value, or its error raised again (side_by_side shows it in the column)."""
    if isinstance(value, Exception):
        raise value
    return value


def download_csv(table: pd.DataFrame, filename: str, label: str = "Download CSV", key: str | None = None) -> None:
    """A CSV download of `table`, with the provenance as `#` lines on top (export.download_csv).
    The file is written only when clicked (not on every run), and the click does not rerun the page."""
    import export

    export.download_csv(table, filename, label, key=key)


def truncation_text(slot: Slot, trace: Trace) -> str | None:
    """What a cut prompt means for this model (None when the whole prompt was run).

    Says how many tokens the prompt has, how many were run, which token "last position" then is,
    and the last character the model saw (core.running.trace.MAX_TRACE_TOKENS).
    """
    if not trace.truncated:
        return None
    run = len(trace.tokens)
    seen = int(trace.offsets[:, 1].max())
    total = f"{trace.total_tokens:,}" if trace.total_tokens else f"more than {run:,}"
    tail = trace.prompt[max(0, seen - 24):seen].replace("\n", " ")
    return (f"Model {slot.label} ({short_name(slot.key.source)}): the prompt has {total} tokens; only the first {run:,} were "
            f"run, so 'last position' is token {run:,} (position {run - 1:,}, {trace.tokens[-1]!r}), "
            f"after the text '…{tail}'. The text after character {seen:,} (of {len(trace.prompt):,}) was not seen.")


def truncation_note(slot: Slot, trace: Trace) -> None:
    """Draw truncation_text as a warning when the prompt was cut at the token limit."""
    text = truncation_text(slot, trace)
    if text:
        st.warning(text, icon=":material/content_cut:")
