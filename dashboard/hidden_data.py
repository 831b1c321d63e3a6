"""The Hidden states page's data for each model, asked once per run: a remote model's page is ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): its tokens come from
the local tokenizer (no job), so the alignment picker works before anything is sent; then the
prompt's vector lengths, the picked token's vector at every entry and the demo's word vectors come
back in one job (core.running.hidden_page.hidden_page), cached on plain values: a new layer on a
slider is no new job, a new pick or new demo sentences are. A failed job raises RemoteError, which
st.cache_data does not keep; it is asked once per run (the error is kept for the run) and shown in
that model's column.
A local model: from its cached trace, and the demo from its cached traces, as before.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core import ModelLoadError
from core.running.context import word_vectors_across
from core.running.hidden_page import HiddenPage, hidden_page

SENTENCES_KEY, WORDS_KEY = "hs_sentences", "hs_words"  # the demo's inputs (drawn below the prompt's views)


def demo_inputs(sentences_text: str, words_text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The demo's sentences (one per line) and words (comma-separated), blanks dropped."""
    return (tuple(s.strip() for s in sentences_text.splitlines() if s.strip()),
            tuple(w.strip() for w in words_text.split(",") if w.strip()))



@st.cache_data(max_entries=32, show_spinner="Waiting for the remote model: the page runs where it runs…")
def _remote(key: ui.ModelKey, prompt: str, position: int | None, sentences: tuple, words: tuple) -> HiddenPage:
    return hidden_page(ui.cached_model(key), prompt, position, sentences, words)


@st.cache_data(max_entries=32, show_spinner="Running the sentences…")
def _local_demo(key: ui.ModelKey, sentences: tuple, words: tuple) -> pd.DataFrame:
    return word_vectors_across(ui.cached_model(key), [ui.cached_trace(key, s) for s in sentences], words, n_values=3)


class PageData:
    """This run's hidden-state data of each model; a failure is kept for the run, so a failed job is sent once."""

    def __init__(self, prompt: str, default_sentences: str, default_words: str):
        self.prompt = prompt
        # read here, before the demo's widgets are drawn, so a remote model's demo goes with its prompt
        self.sentences, self.words = demo_inputs(str(ui.bound_value(SENTENCES_KEY, default_sentences)),
                                                 str(ui.bound_value(WORDS_KEY, default_words)))
        self._tokens: dict[str, object] = {}
        self._views: dict[str, object] = {}

    def demo_asked(self) -> bool:
        return len(self.sentences) >= 2 and bool(self.words)

    def tokens(self, slot: ui.Slot):
        """The prompt's tokens: the cached Trace here, or the local tokenizer's for a remote model."""
        if slot.label not in self._tokens:
            self._tokens[slot.label] = ui.attempt(lambda: ui.tokens_for(slot, self.prompt))
        return ui.outcome(self._tokens[slot.label])

    def usable_tokens(self, slots: list[ui.Slot]) -> dict:
        """{label: tokens} of the models that can run the prompt (a failure is shown by the page's views)."""
        out = {}
        for slot in slots:
            if not ui.runs_text(slot):
                continue
            try:
                out[slot.label] = self.tokens(slot)
            except (ValueError, KeyError, ModelLoadError, RuntimeError):
                continue
        return out

    def view(self, slot: ui.Slot, position: int | None) -> HiddenPage:
        """What the prompt's views draw for this model at the picked `position` (the last one asked this run)."""
        if slot.label not in self._views:
            self._views[slot.label] = ui.attempt(lambda: self._view(slot, position))
        return ui.outcome(self._views[slot.label])

    def _view(self, slot: ui.Slot, position: int | None) -> HiddenPage:
        if ui.remote_of(slot.lm) is not None:
            return _remote(slot.key, self.prompt, position, *(self.sentences, self.words) if self.demo_asked()
                           else ((), ()))
        return hidden_page(slot.lm, ui.cached_trace(slot.key, self.prompt), position)

    def demo(self, slot: ui.Slot) -> pd.DataFrame:
        """word_vectors_across's table for the demo: from the remote job of the prompt's views, or the cached traces."""
        if ui.remote_of(slot.lm) is None:
            return _local_demo(slot.key, self.sentences, self.words)
        page = self.view(slot, None)  # the prompt's views asked it first this run, at their position
        if page.demo_error:
            raise ValueError(page.demo_error)
        return page.demo
