"""What every page shares: the two model pickers, cached models and traces, URL-bound inputs.

Caching rules (Streamlit's conventions):
- `cached_model` keeps each loaded model once per plain key (source, weights, dtype,
  placement) in a store held by st.cache_resource; A and B picking the same model share
  one copy. Loads run in the store's worker thread (core.loading.store).
- `cached_trace` holds one frozen `Trace` per (model, prompt) in a cache bounded by
  bytes (st.cache_resource). It is a resource, not data, because traces are read-only
  NumPy arrays of tens of MB: st.cache_data would unpickle a copy on every rerun.
- Small results (DataFrames) use st.cache_data in the page modules.
Every input that changes a view is mirrored in the URL query string, so a
copied link reproduces the view.

Remote models (NDIF, a self-hosted NDIF, nnsight's local simulation; core.remote): picked under
"Where to put each model". The NDIF key typed in the sidebar is kept in this session only
(never in the URL, never drawn again); the model's cache identity holds a salted hash of it.
Pages that do not run remote models get that model's slot as a plain note (`page_slots`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from core import PRESETS, LoadedModel, ModelLoadError, Trace, load_model, run_trace
from core.loading.store import ModelStore, TraceCache
from core.loading.placement import PLACEMENTS, size_text
from core.loading.sources import DEFAULT_PAIR
from core.remote.connection import DEFAULT_HOST, KEY_NAME, secrets_key
from core.remote.errors import host_secret, redact
from core.remote.model import RemoteLoadedModel

OTHER = "Other: hub id, folder or .gguf…"
DTYPES = ["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class ModelKey:
    """Plain values that identify a loaded model; hashable, so usable as a cache key."""

    source: str
    weights: bool = True
    dtype: str = "auto"
    placement: str = "auto"  # core.loading.placement.PLACEMENTS, or REMOTE: where the weights go
    remote: str = ""  # with REMOTE: "ndif" (NDIF's own service), "local" (nnsight's simulation) or a URL
    ndif_repo_id: str = ""  # the hub id NDIF hosts it under, when the source does not say
    key_digest: str = field(default="", repr=False)  # which typed NDIF key: a salted hash, never the key

    @property
    def is_remote(self) -> bool:
        return self.placement == REMOTE


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


# ---------------------------------------------------------------- URL-bound inputs


def bound_value(key: str, default):
    """Initial value of a widget: the URL's, else what the session has, else the default."""
    if key not in st.session_state:
        st.session_state[key] = st.query_params.get(key, default)
    return st.session_state[key]


def remember_in_url(key: str, value) -> None:
    if value is None or value == "":
        st.query_params.pop(key, None)
    else:
        st.query_params[key] = str(value)


def text_input(label: str, key: str, default: str = "", area: bool = False, **kwargs) -> str:
    bound_value(key, default)
    widget = st.text_area if area else st.text_input
    value = widget(label, key=key, **kwargs)
    remember_in_url(key, value)
    return value


def number_input(label: str, key: str, default: int, min_value: int, max_value: int, **kwargs) -> int:
    if key not in st.session_state:
        try:
            st.session_state[key] = min(max(int(st.query_params.get(key, default)), min_value), max_value)
        except ValueError:
            st.session_state[key] = default
    value = st.number_input(label, key=key, min_value=min_value, max_value=max_value, step=1, **kwargs)
    remember_in_url(key, value)
    return int(value)


def slider(label: str, key: str, default: float, min_value: float, max_value: float, step: float,
           **kwargs) -> float:
    """A float slider bound to the URL (a value out of range or not a number falls back to the default)."""
    if key not in st.session_state:
        try:
            st.session_state[key] = min(max(float(st.query_params.get(key, default)), min_value), max_value)
        except ValueError:
            st.session_state[key] = default
    value = st.slider(label, key=key, min_value=min_value, max_value=max_value, step=step, **kwargs)
    remember_in_url(key, value)
    return float(value)


def selectbox(label: str, options: list, key: str, default=None, **kwargs):
    options = list(options)
    wanted = st.query_params.get(key, default if default is not None else options[0])
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = wanted if wanted in options else options[0]
    value = st.selectbox(label, options, key=key, **kwargs)
    remember_in_url(key, value)
    return value


def preset_row(presets: dict[str, dict[str, str]], prefix: str, label: str = "Presets") -> None:
    """A row of buttons; clicking one sets several inputs at once ({session key: value})."""

    def use(values: dict[str, str]) -> None:
        st.session_state.update(values)

    st.caption(label)
    columns = st.columns(min(len(presets), 6))
    for i, (name, values) in enumerate(presets.items()):
        text = " / ".join(v for v in values.values() if v.strip())
        columns[i % len(columns)].button(name, key=f"{prefix}-preset-{i}", on_click=use, args=(values,),
                                         help=text if len(text) <= 160 else text[:160] + "…", width="stretch")


def preset_buttons(presets: dict[str, str], target_key: str, label: str = "Presets from the lecture",
                   also: dict[str, dict[str, str]] | None = None) -> None:
    """A row of buttons; clicking one puts its text into the input `target_key`.

    `also` (optional): {preset name: {other input key: value}}, set by that preset as well."""
    preset_row({name: {target_key: text, **(also or {}).get(name, {})} for name, text in presets.items()},
               target_key, label)


# ---------------------------------------------------------------- the model pickers


def _source_picker(label: str, default: str) -> tuple[str, bool]:
    slot = label.lower()
    choices = list(PRESETS) + [OTHER]
    picked = st.query_params.get(slot, default)
    st.session_state.setdefault(f"pick_{slot}", picked if picked in PRESETS else OTHER)
    st.session_state.setdefault(f"other_{slot}", "" if picked in PRESETS else picked)
    choice = st.selectbox(f"Model {label}", choices, key=f"pick_{slot}",
                          format_func=lambda name: PRESETS[name].title if name in PRESETS else name)
    if choice == OTHER:
        source = st.text_input(f"Model {label}: hub id, local folder or .gguf file", key=f"other_{slot}",
                               placeholder="e.g. Qwen/Qwen2.5-0.5B or /data/my-model").strip()
    else:
        source = choice
    hub_preset = choice in PRESETS and PRESETS[choice].kind == "hub"
    st.session_state.setdefault(f"weights_{slot}", st.query_params.get(f"{slot}_weights", "0" if hub_preset else "1") == "1")
    weights = st.toggle("Load the weights", key=f"weights_{slot}",
                        help="Off: only the architecture is built, from the config (no download, no memory). "
                             "The Architecture page works; pages that run text need the weights.")
    if hub_preset and not weights:
        st.caption("Config only: architecture from the real config shipped with the app. "
                   "Turn on to download (gated: needs a token, see README).")
    remember_in_url(slot, source)
    remember_in_url(f"{slot}_weights", "1" if weights else "0")
    return source, weights


def model_pickers() -> tuple[ModelKey, ModelKey]:
    """The sidebar pickers for A and B. They live in the entry script, so they hold on every page."""
    keys = []
    with st.sidebar:
        st.header("Models")
        for label, default in zip(("A", "B"), DEFAULT_PAIR):
            source, weights = _source_picker(label, default)
            keys.append((label, source, weights))
        with st.expander("Advanced: number format"):
            dtypes = [selectbox(f"Model {label} dtype", DTYPES, key=f"dtype_{label.lower()}",
                                help="auto: float32 for small models, bfloat16 above 1 B parameters")
                      for label, _, _ in keys]
        with st.expander("Where to put each model"):
            places = [_place_picker(label) for label, _, _ in keys]
    return tuple(_model_key(source, weights, dtype, place, remote)
                 for (_, source, weights), dtype, (place, remote) in zip(keys, dtypes, places))


REMOTE = "remote"  # the placement that runs a model on NDIF (core.remote) instead of here
PLACE_NAMES = {"auto": "auto: GPUs, then CPU RAM, then disk", "gpu": "GPU only", "cpu": "CPU only",
               "disk": "offload the layers to disk", REMOTE: "NDIF (remote)"}
PLACE_HELP = ("auto spreads a model that does not fit one GPU over several GPUs, then CPU RAM, then disk "
              "(slow but it runs). GPU only / CPU only refuse what does not fit. Offload to disk keeps "
              "only the embeddings and head in memory and reads each layer from disk on every prompt. "
              "NDIF runs the model on NDIF's GPUs through nnsight: only what a page shows comes back.")
NDIF_MODES = {"ndif": "NDIF's own service", "url": "a self-hosted NDIF (its address)",
              "local": "nnsight's local simulation of NDIF (on this machine)"}
NDIF_KEYS = "_ndif_keys"  # session_state: {"a"/"b": the NDIF key typed in the sidebar}, this session only


@dataclass(frozen=True)
class RemotePick:
    """What the sidebar says about a remote model: the remote= value, the hub id, the typed key's hash."""

    remote: str  # "ndif", "local", a URL, or "" (a self-hosted NDIF without an address yet)
    repo_id: str = ""
    key_digest: str = ""


def _model_key(source: str, weights: bool, dtype: str, place: str, remote: RemotePick | None) -> ModelKey:
    if remote is None:
        return ModelKey(source, weights, dtype, place)
    # On NDIF the weights stay on NDIF's GPUs (config-only here); the simulation needs them here.
    return ModelKey(source, remote.remote == "local", dtype, REMOTE, remote.remote, remote.repo_id,
                    remote.key_digest)


def _place_picker(label: str) -> tuple[str, RemotePick | None]:
    place = selectbox(f"Model {label} weights", [*PLACEMENTS, REMOTE], key=f"place_{label.lower()}",
                      format_func=PLACE_NAMES.get, help=PLACE_HELP)
    return place, (_remote_picker(label) if place == REMOTE else None)


def ndif_host() -> str:
    """Where NDIF's own service is for this server (NDIF_HOST, else NDIF's default), credentials hidden."""
    return redact(os.environ.get("NDIF_HOST") or DEFAULT_HOST)


def _remote_picker(label: str) -> RemotePick:
    """Which NDIF (its own service, a self-hosted one, nnsight's simulation), the hub id and the key."""
    slot = label.lower()
    mode = selectbox(f"Model {label} on", list(NDIF_MODES), key=f"ndif_{slot}",
                     format_func=lambda m: f"{NDIF_MODES[m]} ({ndif_host()})" if m == "ndif" else NDIF_MODES[m])
    if mode == "local":
        st.caption(f"Model {label}: every request is serialized exactly as for NDIF and run on a copy loaded "
                   "here (the weights are loaded).")
        return RemotePick("local")
    remote = "ndif"
    if mode == "url":
        remote = _url_input(f"Model {label}: address of the self-hosted NDIF", f"ndif_url_{slot}")
    repo_id = text_input(f"Model {label}: its Hugging Face id on NDIF (optional)", key=f"ndif_repo_{slot}",
                         placeholder="e.g. meta-llama/Llama-3.1-70B",
                         help="Needed only for a local folder outside the Hugging Face cache: a preset or "
                              "a hub id names itself.").strip()
    st.caption(f"Model {label}: the weights stay on NDIF; this machine builds the architecture from the "
               "config and reads the tokenizer (no weights, no memory).")
    return RemotePick(remote, repo_id, key_digest(_key_field(label, mode)))


def _url_input(label: str, key: str) -> str:
    """A self-hosted NDIF's address; kept in the URL unless it carries user:password@ (then only here)."""
    bound_value(key, "")
    url = st.text_input(label, key=key, placeholder="https://ndif.example.org").strip()
    remember_in_url(key, None if host_secret(url) else url)
    return url


def _keep_key(slot: str) -> None:
    """on_change of the key field: keep the typed key in this session, then empty the field.

    The field is emptied so the key is never sent back to the browser on a later rerun.
    """
    widget = f"ndif_key_{slot}"
    typed = (st.session_state.get(widget) or "").strip()
    if typed:
        st.session_state.setdefault(NDIF_KEYS, {})[slot] = typed
    st.session_state[widget] = ""


def _forget_key(slot: str) -> None:
    st.session_state.setdefault(NDIF_KEYS, {}).pop(slot, None)


def _key_field(label: str, mode: str) -> str | None:
    """The password field for model `label`'s NDIF key; returns the key typed in this session (or None)."""
    slot = label.lower()
    typed = st.session_state.get(NDIF_KEYS, {}).get(slot)
    st.text_input(f"Model {label}: NDIF API key", key=f"ndif_key_{slot}", type="password",
                  on_change=_keep_key, args=(slot,),
                  placeholder="set for this session: type to replace" if typed else "paste the key",
                  help="Kept for this session only; never shown again, never put into the URL, a file or "
                       "a report. Keys come from https://login.ndif.us.")
    if typed:
        st.caption(f"Model {label}: using the key typed in this session.")
        st.button("Forget the key", key=f"ndif_forget_{slot}", on_click=_forget_key, args=(slot,))
    elif mode == "url":
        st.caption(f"Model {label}: no key is sent. A self-hosted NDIF gets only a key typed here, never "
                   f"this server's own {KEY_NAME}.")
    elif os.environ.get(KEY_NAME, "").strip():
        st.caption(f"Model {label}: using the key from the {KEY_NAME} variable.")
    elif secrets_key():
        st.caption(f"Model {label}: using {KEY_NAME} from .streamlit/secrets.toml.")
    return typed


@st.cache_resource
def _key_salt() -> bytes:
    """A random salt of this server (never written anywhere), so a key's hash says nothing of the key."""
    return secrets.token_bytes(32)


def key_digest(key: str | None) -> str:
    """The cache identity of a typed NDIF key: a salted hash ("" for none)."""
    return hmac.new(_key_salt(), key.encode(), hashlib.sha256).hexdigest()[:24] if key else ""


def typed_ndif_key(key: ModelKey) -> str | None:
    """The key typed in this session whose hash `key` carries (None: no typed key, or another session's)."""
    if not key.key_digest:
        return None
    for typed in st.session_state.get(NDIF_KEYS, {}).values():
        if key_digest(typed) == key.key_digest:
            return typed
    return None


def placement_caption(slot: Slot) -> str | None:
    """Where the slot's weights went, in plain words (None before a model with weights is loaded)."""
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
