"""The logit lens page's data for each model, asked once per run: a remote model's whole page is ONE NDIF job.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): its tokens come from
the local tokenizer (core.running.lens_page.prompt_tokens, no job), so the alignment picker works
before anything is sent; then the grid and the trajectory of the picked position come back in one
job (core.running.lens_page.lens_page), cached on plain values. A failed job raises RemoteError, which
st.cache_data does not keep, and it is asked only once per run (`PageData` holds the error), then
shown in that model's column.
A local model: the grid and the trajectory from its cached trace, cached apart as before, so a new
target word does not decode the grid again.
"""

from __future__ import annotations

import streamlit as st

import ui
from charts.align import with_picked_column
from charts.lens import lens_grid_chart
from core import ModelLoadError
from core.running.lens import lens_grid
from core.running.lens_page import Follow, LensPage, lens_page, tokens_of

TARGET_KEY, AFTER_SPACE_KEY = "lens_target", "lens_after_space"  # the trajectory's inputs (drawn below the grid)




@st.cache_data(max_entries=32, show_spinner="Decoding every layer…")
def _grid(key: ui.ModelKey, prompt: str, k: int) -> LensPage:
    return lens_page(ui.cached_model(key), ui.cached_trace(key, prompt), k=k)


@st.cache_data(max_entries=64, show_spinner=False)
def _trajectory(key: ui.ModelKey, prompt: str, target: str, position: int, after_space: bool) -> LensPage:
    return lens_page(ui.cached_model(key), ui.cached_trace(key, prompt), k=None,
                     follow=Follow(target or None, position, after_space))


@st.cache_data(max_entries=32, show_spinner="Waiting for the remote model: every layer is decoded where it runs…")
def _remote(key: ui.ModelKey, prompt: str, k: int, target: str, position: int, after_space: bool) -> LensPage:
    return lens_page(ui.cached_model(key), prompt, k=k, follow=Follow(target or None, position, after_space))


@st.cache_data(max_entries=32, show_spinner=False)
def _grid_spec(identity: tuple, num_layers: int, lo: int, hi: int, picked: int, _page: LensPage) -> dict:
    """The grid's Vega-Lite spec for positions lo..hi-1 with the picked column outlined, built and validated
    once per table (`identity`: the plain values it was computed from; Altair takes ~0.1 s per grid)."""
    cells = lens_grid(_page.table, _page.tokens, num_layers)
    return with_picked_column(lens_grid_chart(cells[cells["position"].between(lo, hi - 1)]), picked).to_dict()


class PageData:
    """This run's lens data of each model; a failure is kept for the run, so a failed job is sent once."""

    def __init__(self, prompt: str, k: int):
        self.prompt, self.k = prompt, k
        # read here, before the widgets are drawn below the grid, so a remote model's trajectory goes with its grid
        self.target = str(ui.bound_value(TARGET_KEY, ""))
        self.after_space = bool(st.session_state.get(AFTER_SPACE_KEY, True))
        self._token_cache: dict[str, object] = {}
        self._page_cache: dict[tuple[str, int], object] = {}

    def tokens(self, slot: ui.Slot):
        """The prompt's tokens for this model: its cached Trace here, or the local tokenizer's for a remote model."""
        if slot.label not in self._token_cache:
            self._token_cache[slot.label] = ui.attempt(lambda: ui.tokens_for(slot, self.prompt))
        return ui.outcome(self._token_cache[slot.label])

    def usable_tokens(self, slots: list[ui.Slot]) -> dict:
        """{label: tokens} of the models that can run the prompt (a failure is shown by the page's views)."""
        out = {}
        for slot in filter(ui.runs_text, slots):
            try:
                out[slot.label] = self.tokens(slot)
            except (ValueError, KeyError, ModelLoadError, RuntimeError):
                continue
        return out

    def _identity(self, slot: ui.Slot, position: int) -> tuple:
        if ui.remote_of(slot.lm) is not None:
            return slot.key, self.prompt, self.k, self.target, position, self.after_space
        return slot.key, self.prompt, self.k

    def page(self, slot: ui.Slot, position: int) -> LensPage:
        """The grid, and the trajectory at `position`: one job for a remote model, the cached trace's otherwise."""
        if (slot.label, position) not in self._page_cache:
            self._page_cache[slot.label, position] = ui.attempt(lambda: self._page(slot, position))
        return ui.outcome(self._page_cache[slot.label, position])

    def _page(self, slot: ui.Slot, position: int) -> LensPage:
        if ui.remote_of(slot.lm) is not None:
            return _remote(*self._identity(slot, position))
        grid = _grid(slot.key, self.prompt, self.k)
        path = _trajectory(slot.key, self.prompt, self.target, position, self.after_space)
        return LensPage(tokens_of(ui.cached_trace(slot.key, self.prompt)), grid.table, path.trajectory,
                        path.trajectory_error)

    def grid_spec(self, slot: ui.Slot, position: int, lo: int, hi: int) -> dict:
        """The grid of positions lo..hi-1, the picked `position` outlined (cached per table and window)."""
        return _grid_spec(self._identity(slot, position), slot.lm.num_layers, lo, hi, position,
                          _page=self.page(slot, position))
