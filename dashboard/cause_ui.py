"""Inputs and messages shared by the Cause pages (activation patching, input tokens, block writes)."""

from __future__ import annotations

import streamlit as st

import ui


def ready_slots() -> list[ui.Slot]:
    """The slots that can run text; for the others, a warning that says why they are not shown."""
    ready = []
    for slot in ui.current_slots():
        if slot.lm is None or not slot.lm.has_weights:
            st.warning(f"Model {slot.label} ({slot.key.source}) is not shown: "
                       + (slot.error or "it is loaded from its config only (turn on 'Load the weights')."))
        else:
            ready.append(slot)
    return ready


def notes(attrs: dict) -> None:
    """The plain-language notes a core function left in its table's attrs (which token is used, etc.)."""
    for note in attrs.get("notes") or []:
        st.caption(note)


def optional(text: str) -> str | None:
    """An optional answer / target box: None when left empty (the model's own top token is used)."""
    return text if text.strip() else None
