"""The Embeddings page's data for each model, asked once per run: a remote model's page is ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): a query's pieces come
from the local tokenizer (core.weights.embeddings.query_tokens, no job), so the piece picker works
before anything is sent; then the neighbours, the arithmetic and the word map the page's current
inputs ask come back from one job (core.weights.embeddings_page), cached on plain values. The
arithmetic's and the map's inputs are drawn below the neighbours, so they are read here first
(ui.bound_value). A failed job raises RemoteError, which st.cache_data does not keep; it is asked
once per run (the error is kept for the run) and shown in that model's column.
A local model: each part cached apart, as before, so a new k does not redraw the map.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core.weights.embeddings import parse_word_groups, query_tokens, visible
from core.weights.embeddings_page import EmbeddingsPage, embeddings_page

ARITHMETIC_KEYS = ("emb_a", "emb_b", "emb_c", "emb_expected")  # a, b, c, the answer hoped for
WORDS_KEY = "emb_words"


def runs_table(slot: ui.Slot) -> bool:
    """Whether this slot's model can search its table: its weights are here, or it runs remotely."""
    return ui.runs_text(slot) and slot.lm.tokenizer is not None


def _neighbour_view(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(text=[visible(t) for t in table["token"]], pieces=" | ".join(table.attrs["query_pieces"]))


def _arithmetic_view(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    return table.assign(text=[visible(t) for t in table["token"]]), dict(table.attrs)


def _projection_view(points: pd.DataFrame) -> tuple[pd.DataFrame, list[float]]:
    return points.assign(word=[visible(w) for w in points["word"]]), points.attrs["explained"]


@st.cache_data(max_entries=64, show_spinner=False)
def query_pieces(key: ui.ModelKey, query: str) -> tuple[list[int], list[str]]:
    ids, readable = query_tokens(ui.cached_model(key), query)
    return ids, [visible(p) for p in readable]


@st.cache_data(max_entries=128, show_spinner="Comparing with every token of the vocabulary…")
def _neighbours(key: ui.ModelKey, query, k: int) -> pd.DataFrame:
    return _neighbour_view(embeddings_page(ui.cached_model(key), query=query, k=k).part("neighbours"))


@st.cache_data(max_entries=64, show_spinner="Computing a − b + c…")
def _arithmetic(key: ui.ModelKey, sums: tuple, k: int) -> tuple[pd.DataFrame, dict]:
    return _arithmetic_view(embeddings_page(ui.cached_model(key), k=k, sums=sums).part("arithmetic"))


@st.cache_data(max_entries=32, show_spinner="Projecting the words…")
def _projection(key: ui.ModelKey, words_text: str) -> tuple[pd.DataFrame, list[float]]:
    return _projection_view(embeddings_page(ui.cached_model(key), words=parse_word_groups(words_text))
                            .part("projection"))


@st.cache_data(max_entries=32, show_spinner="Waiting for the remote model: the search runs where its table is…")
def _remote(key: ui.ModelKey, query, k: int, sums: tuple | None, words_text: str | None) -> EmbeddingsPage:
    words = None if words_text is None else parse_word_groups(words_text)
    return embeddings_page(ui.cached_model(key), query=query, k=k, sums=sums, words=words)


class PageData:
    """This run's Embeddings data of each model; a failure is kept for the run, so a failed job is sent once."""

    def __init__(self, k: int, arithmetic_defaults: tuple[str, str, str, str], words_default: str):
        self.k = k
        # read here, before their widgets are drawn below the neighbours, so a remote model's job has them all
        a, b, c, expected = (str(ui.bound_value(key, default)) for key, default in zip(ARITHMETIC_KEYS,
                                                                                       arithmetic_defaults))
        self.sums = (a, b, c, expected or None) if all(x.strip() for x in (a, b, c)) else None
        self.words_text = str(ui.bound_value(WORDS_KEY, words_default))
        self._used: dict[str, object] = {}  # slot label -> the query its neighbours were asked for
        self._pages: dict[tuple, object] = {}

    def words_asked(self) -> bool:
        return len(parse_word_groups(self.words_text)) >= 3

    def _page(self, slot: ui.Slot) -> EmbeddingsPage:
        """The remote model's whole page for the query its neighbours view used (None if it asked none)."""
        query = self._used.get(slot.label)
        if (slot.label, query) not in self._pages:
            self._pages[slot.label, query] = ui.attempt(lambda: _remote(
                slot.key, query, self.k, self.sums, self.words_text if self.words_asked() else None))
        return ui.outcome(self._pages[slot.label, query])

    def neighbours(self, slot: ui.Slot, query) -> pd.DataFrame:
        """nearest_tokens's table for `query` (the whole word or one of its pieces), with the readable text."""
        if ui.remote_of(slot.lm) is None:
            return _neighbours(slot.key, query, self.k)
        self._used[slot.label] = query  # the arithmetic and the map come from this query's job
        return _neighbour_view(self._page(slot).part("neighbours"))

    def arithmetic(self, slot: ui.Slot) -> tuple[pd.DataFrame, dict]:
        """arithmetic's table of the page's a, b, c and expected word, and its attrs."""
        if ui.remote_of(slot.lm) is None:
            return _arithmetic(slot.key, self.sums, self.k)
        return _arithmetic_view(self._page(slot).part("arithmetic"))

    def projection(self, slot: ui.Slot) -> tuple[pd.DataFrame, list[float]]:
        """project_words's points of the page's words, and the share of variance of each axis."""
        if ui.remote_of(slot.lm) is None:
            return _projection(slot.key, self.words_text)
        return _projection_view(self._page(slot).part("projection"))
