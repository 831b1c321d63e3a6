"""The Hidden-state maps page's data for each model: a remote model's sentences all go in ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): core.running.maps.model_maps
gets the items, finds each word's tokens with the local tokenizer (no job), runs every sentence in
one job and gets back only the items' Gram matrices (L+1, N, N), from which every map and score is
computed here. A local model: from its cached traces, through the same Gram route. Cached on plain
values (the items as tuples), so a new depth on the slider is no new job; a failed job raises
RemoteError (a ModelLoadError), which st.cache_data does not keep: the page asks once per run and
side_by_side shows it in that model's column.
"""

from __future__ import annotations

import streamlit as st

import ui
from core.running.maps import HiddenStateMaps, MapItem, model_maps


@st.cache_data(max_entries=32, show_spinner="Running the sentences…")
def maps_for(key: ui.ModelKey, items: tuple, pooling: str) -> HiddenStateMaps:
    """Every layer's map and separation for one model; `items` as plain (group, sentence, word, start, end) tuples."""
    lm = ui.cached_model(key)
    items = [MapItem(*item) for item in items]
    traces = None if ui.remote_of(lm) is not None else [ui.cached_trace(key, item.sentence) for item in items]
    return model_maps(lm, items, pooling, traces=traces)  # remote: one job, only the Gram matrices come back


def truncation_notes(slot: ui.Slot, sentences) -> None:
    """A sentence cut at the token limit says so (a remote model's cut from the local tokenizer, no job)."""
    for sentence in sentences:
        ui.truncation_note(slot, ui.tokens_for(slot, sentence, spinner=False))
