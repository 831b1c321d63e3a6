"""The Patchscopes page's data for each model: a remote model's whole layer sweep is ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): the source prompt's
tokens come from the local tokenizer (core.running.lens_page.prompt_tokens, no job), so the word
picker works before anything is sent; then core.intervene.patchscopes.patchscope reads the source
and runs every layer's patched target where the model runs, and only the new token ids come back.
Cached on plain values: a rerun with the same pick is no new job. A failed job raises RemoteError,
which st.cache_data does not keep; it is kept for the run (ui.attempt) and shown in that model's column.
A local model: from its cached trace of the source prompt, as before.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core import ModelLoadError
from core.intervene.patchscopes import answer_changes, first_answer, patchscope, patchscope_from_trace




def source_tokens(slot: ui.Slot, source: str):
    """The source prompt's tokens: the cached Trace here, or the local tokenizer's for a remote model."""
    return ui.tokens_for(slot, source)


def usable_tokens(slots: list[ui.Slot], source: str) -> dict:
    """{label: tokens} of the models that can run the source prompt (a failure is shown in the model's column)."""
    out = {}
    for slot in slots:
        if not ui.runs_text(slot):
            continue
        try:
            out[slot.label] = source_tokens(slot, source)
        except (ValueError, KeyError, ModelLoadError, RuntimeError):
            continue
    return out


@st.cache_data(max_entries=32, show_spinner="Patching every layer and generating…")
def sweep(key: ui.ModelKey, source: str, position: int, target: str, placeholder: str, max_new_tokens: int,
          chat: bool) -> pd.DataFrame:
    """One row per source layer: the whole continuation, its answer, whether it changed, the relative depth."""
    lm = ui.cached_model(key)
    options = {"placeholder": placeholder, "max_new_tokens": max_new_tokens, "chat": chat}
    if ui.remote_of(lm) is not None:  # one job there: the source is read and every layer patched where it runs
        table = patchscope(lm, source, position, target, **options)
    else:
        table = patchscope_from_trace(lm, ui.cached_trace(key, source), position, target, **options)
    table["answer"] = table["text"].map(first_answer)
    table["changed"] = answer_changes(table[["answer"]].rename(columns={"answer": "text"}))
    table["relative_depth"] = table["layer"] / lm.num_layers
    return table


class PageData:
    """This run's sweeps; a failure is kept for the run, so a failed job is sent once."""

    def __init__(self, source: str, target: str, placeholder: str, max_new_tokens: int):
        self.source, self.target, self.placeholder, self.max_new_tokens = source, target, placeholder, max_new_tokens
        self._sweeps: dict[str, object] = {}

    def sweep(self, slot: ui.Slot, position: int, chat: bool) -> pd.DataFrame:
        if slot.label not in self._sweeps:
            self._sweeps[slot.label] = ui.attempt(lambda: sweep(slot.key, self.source, position, self.target,
                                                                self.placeholder, self.max_new_tokens, chat))
        return ui.outcome(self._sweeps[slot.label])
