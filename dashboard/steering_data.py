"""The Steering page's data for each model: a remote model's directions are ONE NDIF job, asked once per run.

A remote model (core.remote: NDIF, a self-hosted NDIF, nnsight's simulation): every layer's direction
comes back from one job (core.intervene.steering.steering_directions; 8.3 MB for Llama-3.1-405B),
cached on plain values, so a move of the depth slider, Generate and "Try every layer" send no new
direction job. Generate (both continuations) and "Try every layer" are one job each, run by
core.intervene.steering (with_and_without, layer_sweep). A failed job raises RemoteError, which
st.cache_data does not keep; it is asked once per run (the error is kept for the run) and shown in
that model's column. Cuts at the token limit come from the local tokenizer (no job).
A local model: the direction from its cached traces (one forward pass per prompt), as before.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import ui
from core.intervene.steering import directions_from_traces, steering_directions
from core.text.chat import model_text


@st.cache_data(max_entries=16, show_spinner="Waiting for the remote model: the directions are computed there…")
def _remote_directions(key: ui.ModelKey, positive: tuple, negative: tuple, chat: bool) -> np.ndarray:
    return steering_directions(ui.cached_model(key), list(positive), list(negative), chat=chat)


class PageData:
    """This run's directions of each model (layers, hidden); a failure is kept for the run, so it is sent once."""

    def __init__(self, positive: list[str], negative: list[str]):
        self.positive, self.negative = tuple(positive), tuple(negative)
        self._directions: dict[tuple[str, bool], object] = {}

    def _local(self, slot: ui.Slot, chat: bool) -> np.ndarray:
        def traces(prompts):
            return [ui.cached_trace(slot.key, model_text(slot.lm, p, chat)) for p in prompts]

        return directions_from_traces(traces(self.positive), traces(self.negative))

    def directions(self, slot: ui.Slot, chat: bool) -> np.ndarray:
        """The direction of every layer: (layers, hidden) float32."""
        if (slot.label, chat) not in self._directions:
            ask = ((lambda: _remote_directions(slot.key, self.positive, self.negative, chat))
                   if ui.remote_of(slot.lm) is not None else (lambda: self._local(slot, chat)))
            self._directions[slot.label, chat] = ui.attempt(ask)
        return ui.outcome(self._directions[slot.label, chat])

    def truncation_notes(self, slot: ui.Slot, chat: bool) -> None:
        """A prompt of either list cut at the token limit says so (a remote model's cut from the local tokenizer)."""
        for prompt in (*self.positive, *self.negative):
            text = model_text(slot.lm, prompt, chat)
            ui.truncation_note(slot, ui.tokens_for(slot, text, spinner=False))
