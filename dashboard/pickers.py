"""The sidebar's model pickers: which model A and B are, their number format, and where each one runs.

They live in the entry script (Home.py calls `model_pickers`), so they stay set across pages. The
result is a pair of `ModelKey`s: plain values, the cache identity of a loaded model.

"Where to put each model" includes NDIF (core.remote): NDIF's own service, a self-hosted NDIF, or
nnsight's local simulation. The NDIF key typed there is kept in this session only (never in the URL,
never drawn again); the ModelKey holds a salted hash of it (`key_digest`), and `typed_ndif_key` finds
the key again for the session that typed it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

import streamlit as st

from core import PRESETS
from core.loading.placement import PLACEMENTS
from core.loading.sources import DEFAULT_PAIR
from core.remote.connection import DEFAULT_HOST, KEY_NAME, secrets_key
from core.remote.errors import host_secret, redact
from inputs import bound_value, remember_in_url, selectbox, text_input

OTHER = "Other: hub id, folder or .gguf…"
DTYPES = ["auto", "float32", "bfloat16"]
REMOTE = "remote"  # the placement that runs a model on NDIF (core.remote) instead of here


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
