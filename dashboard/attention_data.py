"""The Attention page's data for each model: a remote model's render is ONE NDIF job, only what is drawn.

A local model: everything from its cached Trace, as before (the grid image from every head's
weights, the summaries, one head's cells). A remote model (core.remote: NDIF, a self-hosted NDIF,
nnsight's simulation): its tokens come from the local tokenizer (no job), and one render asks
core.running.attention_page for the parts it draws that no earlier render brought back: the head
summaries, the grid pooled to the pixels each tile is drawn at, and the head picked up close. So
picking another head is a job for that head's (T, T) weights alone; turning on "Hide the first token"
one for the grid. The parts are kept in a small store shared by the sessions (plain values, keyed by
model and prompt); a failed job is kept for this run only (asked once, shown in the model's column).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace

import streamlit as st

import ui
from charts.align import with_picked_row
from charts.attention import grid_image, head_heatmap, png_bytes, summary_heatmap, tile_size
from core import ModelLoadError
from core.running.attention import SUMMARY_METRICS, head_view, kv_head_of, layer_kinds, summaries_table, summary_table
from core.running.attention_page import attention_page

WINDOW = 40  # tokens drawn up close at most: one rectangle per pair, each with a tooltip
_STORED_PARTS = 96  # parts kept for remote models (a 405B grid at 64 tokens is 16.5 MB)


def is_remote(slot: ui.Slot) -> bool:
    """Whether this slot's model runs remotely (NDIF, a self-hosted NDIF, or nnsight's simulation)."""
    return ui.remote_of(slot.lm) is not None


def grid_cells(tokens: int, heads: int, hide_first: bool) -> int:
    """Pixels a side of each grid tile (the chart's own tile_size): what a remote grid is pooled to."""
    return tile_size(tokens - int(hide_first), heads)


@st.cache_resource
def _store():
    """Remote models' page parts (plain values), shared by the sessions, oldest dropped first."""
    return SimpleNamespace(parts=OrderedDict(), lock=threading.Lock())



class PageData:
    """This run's attention data of each model (prompt and "hide the first token" fixed for the run)."""

    def __init__(self, prompt: str, hide_first: bool):
        self.prompt, self.hide_first = prompt, hide_first
        self._failed: dict[str, Exception] = {}

    def tokens(self, slot: ui.Slot):
        """The prompt's tokens: the cached Trace of a local model, the local tokenizer's for a remote one."""
        return ui.tokens_for(slot, self.prompt)

    def usable(self, slots: list[ui.Slot]) -> dict:
        """{label: tokens} of the models that can run the prompt, for the alignment picker."""
        out = {}
        for slot in slots:
            if not ui.runs_text(slot):
                continue
            try:
                out[slot.label] = self.tokens(slot)
            except (ValueError, KeyError, ModelLoadError, RuntimeError):
                continue
        return out

    def failed(self, slot: ui.Slot) -> bool:
        """Whether this run's job for a remote model failed (its message is shown once, up close)."""
        return slot.label in self._failed

    def _parts(self, slot: ui.Slot, head: tuple[int, int]) -> dict:
        """The summaries, grid and `head` of a remote model; the missing ones in ONE job."""
        if slot.label in self._failed:
            raise self._failed[slot.label]
        n = len(self.tokens(slot).token_ids)
        size = grid_cells(n, slot.lm.num_heads, self.hide_first)
        keys = {"summaries": (slot.key, self.prompt, "summaries"),
                "grid": (slot.key, self.prompt, "grid", self.hide_first, size),
                "head": (slot.key, self.prompt, "head", int(head[0]), int(head[1]))}
        store = _store()
        with store.lock:
            missing = [part for part, key in keys.items() if key not in store.parts]
        if missing:
            try:
                with st.spinner("Waiting for the remote model: the attention is reduced where it runs…"):
                    page = attention_page(slot.lm, self.prompt, summaries="summaries" in missing,
                                          grid={"hide": self.hide_first, "size": size} if "grid" in missing else None,
                                          head=head if "head" in missing else None)
            except (ValueError, KeyError, ModelLoadError, RuntimeError) as error:
                self._failed[slot.label] = error
                raise
            with store.lock:
                for part in missing:
                    store.parts[keys[part]] = getattr(page, part)
                while len(store.parts) > _STORED_PARTS:
                    store.parts.popitem(last=False)
        with store.lock:
            for key in keys.values():
                store.parts.move_to_end(key)
            return {part: store.parts[key] for part, key in keys.items()}

    def head(self, slot: ui.Slot, layer: int, head: int):
        """(source, layer, head): source has .tokens and .attentions, indexed [layer, head] (a remote model's
        one head is (1, 1, T, T))."""
        if not is_remote(slot):
            return ui.cached_trace(slot.key, self.prompt), layer, head
        weights = self._parts(slot, (layer, head))["head"]  # (T, T)
        return SimpleNamespace(tokens=self.tokens(slot).tokens, attentions=weights[None, None]), 0, 0

    def grid_png(self, slot: ui.Slot, log_scale: bool, shared: bool, selected: tuple) -> bytes:
        if not is_remote(slot):
            return _grid_png(slot.key, self.prompt, self.hide_first, log_scale, shared, selected)
        tiles = self._parts(slot, selected)["grid"]  # (L, heads, s, s), token 0 already hidden if asked
        return _grid_png_of((slot.key, self.prompt, self.hide_first, log_scale, shared, selected), log_scale, shared,
                            selected, _lm=slot.lm, _tiles=tiles)

    def summaries(self, slot: ui.Slot, head: tuple[int, int]):
        if not is_remote(slot):
            return _summaries(slot.key, self.prompt)
        return summaries_table(slot.lm, self._parts(slot, head)["summaries"])

    def summary_spec(self, slot: ui.Slot, head: tuple[int, int], metric: str) -> dict:
        if not is_remote(slot):
            return _summary_spec(slot.key, self.prompt, metric)
        return _summary_spec_of((slot.key, self.prompt, metric), metric, _table=self.summaries(slot, head))

    def head_spec(self, slot: ui.Slot, layer: int, head: int, start: int, log_scale: bool, row: int | None) -> dict:
        """One head's heatmap for WINDOW tokens from `start`, with the picked token's row (`row`) outlined."""
        if not is_remote(slot):
            return _head_spec(slot.key, self.prompt, layer, head, self.hide_first, start, log_scale, row)
        source, l, h = self.head(slot, layer, head)
        return _spec(source, l, h, self.hide_first, start, log_scale, row)


def _title(key) -> str:
    return f"{ui.short_name(key.source)}: rows = layers, columns = heads"


@st.cache_data(max_entries=32, show_spinner="Drawing every head…")
def _grid_png(key, prompt: str, hide_first: bool, log_scale: bool, shared: bool, selected: tuple) -> bytes:
    lm, trace = ui.cached_model(key), ui.cached_trace(key, prompt)
    return png_bytes(grid_image(trace.attentions, hide_first=hide_first, log_scale=log_scale, shared_scale=shared,
                                layer_kinds=layer_kinds(lm), kv_heads=kv_head_of(lm), selected=selected,
                                title=_title(key)))


@st.cache_data(max_entries=32, show_spinner="Drawing every head…")
def _grid_png_of(identity: tuple, log_scale: bool, shared: bool, selected: tuple, _lm, _tiles) -> bytes:
    """A remote model's grid from its pooled tiles (`identity`: the plain values they came from)."""
    return png_bytes(grid_image(_tiles, log_scale=log_scale, shared_scale=shared, layer_kinds=layer_kinds(_lm),
                                kv_heads=kv_head_of(_lm), selected=selected, title=_title(identity[0])))


@st.cache_data(max_entries=32, show_spinner=False)
def _summaries(key, prompt: str):
    return summary_table(ui.cached_model(key), ui.cached_trace(key, prompt))


@st.cache_data(max_entries=64, show_spinner=False)
def _summary_spec(key, prompt: str, metric: str) -> dict:
    """The chart as a Vega-Lite spec, cached: Altair's schema validation costs more than drawing it."""
    return summary_heatmap(_summaries(key, prompt), metric, SUMMARY_METRICS[metric]).to_dict()


@st.cache_data(max_entries=64, show_spinner=False)
def _summary_spec_of(identity: tuple, metric: str, _table) -> dict:
    return summary_heatmap(_table, metric, SUMMARY_METRICS[metric]).to_dict()


@st.cache_data(max_entries=256, show_spinner=False)
def _head_spec(key, prompt: str, layer: int, head: int, hide_first: bool, start: int, log_scale: bool,
               row: int | None) -> dict:
    return _spec(ui.cached_trace(key, prompt), layer, head, hide_first, start, log_scale, row)


def _spec(source, layer: int, head: int, hide_first: bool, start: int, log_scale: bool, row: int | None) -> dict:
    cells = head_view(source.attentions, source.tokens, layer, head, hide_first, start, WINDOW)
    return with_picked_row(head_heatmap(cells, log_scale), cells, row).to_dict()
