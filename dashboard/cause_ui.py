"""Inputs, messages and data shared by the Cause pages (activation patching, input tokens, block writes).

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation) runs each analysis as ONE
job (core.remote.cause); its results are cached on plain values (`ui.ModelKey` and the page's inputs),
and a failed job, which st.cache_data does not keep, is kept for the run (`Asked`) so every view of it
shows the same message in that model's column and the job is not sent again by the next view.
The gradient modes (attribution patching, gradient × input) run there too, their backward pass included
(core.remote.cause_grad), one job each.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core import activation_patching, block_contributions, block_token_effects, token_attribution, what_blocks_read
from core.cause.reads import block_writes_page
from core.cause.patching import patching_sites

def is_remote(slot: ui.Slot) -> bool:
    return ui.remote_of(slot.lm) is not None


def ready_slots() -> list[ui.Slot]:
    """The slots that can run text; for the others, a warning that says why they are not shown."""
    ready = []
    for slot in ui.current_slots():
        if slot.lm is None or not (slot.lm.has_weights or is_remote(slot)):
            st.warning(f"Model {slot.label} ({slot.key.source}) is not shown: "
                       + (slot.error or "it is loaded from its config only (turn on 'Load the weights')."))
        else:
            ready.append(slot)
    return ready


def pending_number(key: str, default: int, min_value: int, max_value: int) -> int:
    """The value a number box drawn further down will have, read before it is drawn (as inputs.number_input
    reads it: the session's, else the URL's, clamped; not a number: the default). Writes nothing."""
    try:
        value = int(st.session_state.get(key, st.query_params.get(key, default)))
    except (TypeError, ValueError):
        return default
    return min(max(value, min_value), max_value)


def notes(attrs: dict) -> None:
    """The plain-language notes a core function left in its table's attrs (which token is used, etc.)."""
    for note in attrs.get("notes") or []:
        st.caption(note)


def optional(text: str) -> str | None:
    """An optional answer / target box: None when left empty (the model's own top token is used)."""
    return text if text.strip() else None


@st.cache_data(max_entries=64, show_spinner="Patching every layer and token…")
def patching(key: ui.ModelKey, clean: str, corrupted: str, answer, foil, site: str, method: str) -> pd.DataFrame:
    return activation_patching(ui.cached_model(key), clean, corrupted, answer=answer, foil=foil, site=site,
                               method=method)


@st.cache_data(max_entries=64, show_spinner="Waiting for the remote model: every cell is patched where it runs…")
def patching_remote(key: ui.ModelKey, clean: str, corrupted: str, answer, foil, sites: tuple,
                    method: str) -> dict[str, pd.DataFrame]:
    """A remote model's grids (exact or attribution) of every site the page shows, from ONE job
    (core.cause.patching.patching_sites)."""
    return patching_sites(ui.cached_model(key), clean, corrupted, answer=answer, foil=foil, sites=sites,
                          method=method)


@st.cache_data(max_entries=64, show_spinner="Scoring every input token…")
def attribution(key: ui.ModelKey, prompt: str, target, method: str) -> pd.DataFrame:
    return token_attribution(ui.cached_model(key), prompt, target=target, method=method)


@st.cache_data(max_entries=64, show_spinner="Taking the residual stream apart…")
def contributions(key: ui.ModelKey, prompt: str, target) -> pd.DataFrame:
    return block_contributions(ui.cached_model(key), prompt, target=target)


@st.cache_data(max_entries=64, show_spinner="Finding the tokens each block pushes…")
def token_effects(key: ui.ModelKey, prompt: str, k: int) -> pd.DataFrame:
    return block_token_effects(ui.cached_model(key), prompt, k=k)


@st.cache_data(max_entries=64, show_spinner="Waiting for the remote model: the blocks are taken apart where it runs…")
def blocks_remote(key: ui.ModelKey, prompt: str, target, k: int, original: str, changed: str) -> tuple:
    """A remote model's contributions, token effects and the demonstration (its table, or its ValueError), from
    ONE job (core.cause.reads.block_writes_page)."""
    return block_writes_page(ui.cached_model(key), prompt, original, changed, target=target, k=k)


@st.cache_data(max_entries=64, show_spinner="Running both prompts three times…")
def reads(key: ui.ModelKey, original: str, changed: str) -> pd.DataFrame:
    return what_blocks_read(ui.cached_model(key), original, changed)


class Asked:
    """This run's answers of the cached functions above: a failure is kept for the run (sent once, shown alike)."""

    def __init__(self):
        self._kept: dict = {}

    def __call__(self, ask, key: ui.ModelKey, *args):
        name = (ask.__name__, key, args)
        if name not in self._kept:
            self._kept[name] = ui.attempt(lambda: ask(key, *args))
        return ui.outcome(self._kept[name])
