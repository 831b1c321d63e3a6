"""The Contextual similarity page's data for each model: a remote model's sentences all go in ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): similarity_curves is
given the sentences as text, so core runs them all in one job and only the cosines come back; the
word's tokens and any cut at the token limit come from the local tokenizer (no job). A local model:
from its cached traces, as before. A failed job raises RemoteError (a ModelLoadError), which
st.cache_data does not keep; the page shows it in that model's column.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core.running.context import similarity_curves, word_pieces



def _inputs(key: ui.ModelKey, sentences: tuple) -> list:
    """What core is given: the text for a remote model (one job there), the cached traces otherwise."""
    if ui.remote_of(ui.cached_model(key)) is not None:
        return list(sentences)
    return [ui.cached_trace(key, s) for s in sentences]


@st.cache_data(max_entries=64, show_spinner="Running the sentences…")
def curves(key: ui.ModelKey, sentences: tuple, word: str, exclude_bos: bool, center: bool) -> pd.DataFrame:
    return similarity_curves(ui.cached_model(key), _inputs(key, sentences), word, exclude_bos=exclude_bos,
                             center=center)


@st.cache_data(max_entries=64, show_spinner=False)
def pieces(key: ui.ModelKey, sentences: tuple, word: str) -> pd.DataFrame:
    lm = ui.cached_model(key)
    return word_pieces(lm, list(sentences) if ui.remote_of(lm) is not None else _inputs(key, sentences), word)


def truncation_notes(slot: ui.Slot, sentences: tuple) -> None:
    """A sentence cut at the token limit says so (a remote model's cut from the local tokenizer)."""
    for sentence in sentences:
        ui.truncation_note(slot, ui.tokens_for(slot, sentence, spinner=False))
