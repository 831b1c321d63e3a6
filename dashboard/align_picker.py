"""The shared "one word, both tokenizers" picker of the pages that run text.

Pick a word of the prompt, or a token of model A or of model B; core.text.align turns it into each
model's tokens covering the same characters. The pick is kept in the URL (`<prefix>_pick_by`
and `<prefix>_word` / `<prefix>_tok_a` / `<prefix>_tok_b`), and the page reads the returned
`Selection` in every view (`selection.focus(label)`: the last picked token of that model).
Below the picker, the alignment strip shows both tokenizations on one character axis.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import export
import ui
from charts.align import alignment_strip
from charts.lens import visible
from core import ModelLoadError, Trace
from core.running.attention import hide_first_token, normalised
from core.text.align import Selection, alignment_table, seen_chars, select, shared_segments, strip_rows, word_spans

STRIP_CHARS = 64  # characters drawn in the strip: a window around the pick in a long prompt
BY_WORD = "word"


def usable_traces(prompt: str, slots=None) -> dict[str, Trace]:
    """{label: trace} for the models that can run the prompt (a failure is shown by the page's own views)."""
    traces = {}
    for slot in slots if slots is not None else ui.current_slots():
        if slot.lm is None or not slot.lm.has_weights:
            continue
        try:
            traces[slot.label] = ui.trace_for(slot, prompt)
        except (ValueError, KeyError, ModelLoadError, RuntimeError):  # the page's views show the message
            continue
    return traces


def _forget_old_pick(prefix: str, prompt: str) -> None:
    """A new prompt starts from the default pick (its last word), in the page and in the URL."""
    if st.session_state.get(f"{prefix}_pick_prompt") != prompt:
        if f"{prefix}_pick_prompt" in st.session_state:
            for key in (f"{prefix}_word", f"{prefix}_tok_a", f"{prefix}_tok_b"):
                st.session_state.pop(key, None)
                st.query_params.pop(key, None)
        st.session_state[f"{prefix}_pick_prompt"] = prompt


def _pick_by(prefix: str, labels: list[str]) -> str:
    options = [BY_WORD] + labels
    key = f"{prefix}_pick_by"
    if key not in st.session_state or st.session_state[key] not in options:
        wanted = st.query_params.get(key, BY_WORD)
        st.session_state[key] = wanted if wanted in options else BY_WORD
    by = st.radio("Pick", options, key=key, horizontal=True,
                  format_func=lambda o: "a word of the prompt" if o == BY_WORD else f"a token of model {o}")
    ui.remember_in_url(key, "" if by == BY_WORD else by)
    return by


def _describe(label: str, trace: Trace, positions) -> str:
    if not positions:
        return (f"**{label}**: no token covers them (a start token covers no character; text past the token "
                "limit was not run)")
    return f"**{label}**: " + ", ".join(f"{p}: `{visible(trace.tokens[p])}`" for p in positions)


def pick(prefix: str, prompt: str, traces: dict[str, Trace]) -> Selection | None:
    """Draw the picker and the alignment strip; return what is picked (None: no model ran the prompt)."""
    if not traces:
        return None
    _forget_old_pick(prefix, prompt)
    labels = list(traces)
    offsets = {label: trace.offsets for label, trace in traces.items()}
    both_seen = min(seen_chars(o) for o in offsets.values())
    st.subheader("One word, both tokenizers")
    st.caption("The two models cut the text into different tokens. Pick a word, or one model's token: the other "
               "model gets the tokens that cover the same characters. Every view below uses this pick, at "
               "each model's **last** picked token (the only one that has read the whole word).")
    left, right = st.columns([1, 2])
    with left:
        by = _pick_by(prefix, labels)
    with right:
        if by == BY_WORD:
            spans = word_spans(prompt, limit=both_seen)
            if not spans:
                st.info("The prompt has no word in the text both models ran.")
                return None
            options = [f"{s}-{e}" for s, e in spans]
            chosen = ui.selectbox("Word", options, key=f"{prefix}_word", default=options[-1],
                                  format_func=lambda o: _word_label(prompt, o))
            start, end = (int(v) for v in chosen.split("-"))
            selection = select(offsets, span=(start, end))
        else:
            trace = traces[by]
            options = [str(p) for p in range(len(trace.tokens))]
            chosen = ui.selectbox(f"Token of model {by}", options, key=f"{prefix}_tok_{by.lower()}",
                                  default=options[-1], format_func=lambda o: _token_label(trace, int(o)))
            selection = select(offsets, token=(by, int(chosen)))
    start, end = selection.span
    st.markdown(f"Picked characters {start}–{end} `{visible(prompt[start:end])}` → "
                + " · ".join(_describe(label, traces[label], selection.positions[label]) for label in labels))
    _strip(prefix, prompt, traces, selection)
    return selection


def _clicked(prefix: str, labels: list[str]) -> None:
    """A click on a token of the strip picks that token (before the picker widgets are drawn again)."""
    points = st.session_state.get(f"{prefix}_strip", {}).get("selection", {}).get("token", [])
    if points and points[0].get("model") in labels and "position" in points[0]:
        label = points[0]["model"]
        st.session_state[f"{prefix}_pick_by"] = label
        st.session_state[f"{prefix}_tok_{label.lower()}"] = str(int(points[0]["position"]))


def _word_label(prompt: str, option: str) -> str:
    start, end = (int(v) for v in option.split("-"))
    return f"{prompt[start:end]}  (characters {start}–{end})"


def _token_label(trace: Trace, position: int) -> str:
    start, end = trace.offsets[position]
    return f"{position}: {visible(trace.tokens[position])}  (characters {start}–{end})"


def _strip(prefix: str, prompt: str, traces: dict[str, Trace], selection: Selection) -> None:
    tokenizations = {label: (trace.tokens, trace.offsets) for label, trace in traces.items()}
    seen = max(seen_chars(trace.offsets) for trace in traces.values())
    lo = max(0, min(selection.span[0] - STRIP_CHARS // 3, seen - STRIP_CHARS))
    window = (lo, max(lo + 1, min(seen, lo + STRIP_CHARS)))
    segments = shared_segments([o for _, o in tokenizations.values()], seen)
    cuts = sorted({c for segment in segments for c in segment})
    rows = strip_rows(tokenizations, {label: list(p) for label, p in selection.positions.items()}, window)
    titles = {slot.label: slot.title for slot in ui.current_slots() if slot.label in traces}
    export.show_chart(alignment_strip(rows, prompt, window, selection.span, cuts, titles), f"{prefix}_alignment",
                      table=rows, settings={"picked characters": f"{selection.span[0]}-{selection.span[1]}"},
                      width="stretch", key=f"{prefix}_strip", on_select=lambda: _clicked(prefix, list(traces)),
                      selection_mode="token")
    st.caption("Click a token to pick it. Each box is one token, placed over the characters it covers (byte "
               "pieces of one character share its width; the start token sits left of character 0). Dashed lines: "
               "cuts both models make; the text between two of them is a span both models cover with whole tokens."
               + (f" Characters {window[0]}–{window[1] - 1} of {seen:,} are drawn." if seen > STRIP_CHARS else ""))
    with st.expander("The alignment table: every shared span and its tokens"):
        table = alignment_table(prompt, tokenizations)
        st.dataframe(table, hide_index=True, width="stretch")
        ui.download_csv(table, f"{prefix}_alignment_table.csv", "CSV of the alignment")


def follow_pick(key: str, row: int | None, window: int, total: int) -> None:
    """Set the window slider `key` (start of `window` shown tokens of `total`) so the picked `row` is in view.

    Moves it only when the pick changed, so the slider stays free to scroll; keeps it in range when
    the prompt (and so `total`) changed. The slider is then drawn from session state, without a value.
    """
    top = max(total - window, 0)
    current = st.session_state.get(key)
    if current is None:
        current = top if row is None else min(max(0, row - window // 2), top)
    if row is not None and st.session_state.get(f"{key}_for") != row:
        st.session_state[f"{key}_for"] = row
        if not current <= row < current + window:
            current = min(max(0, row - window // 2), top)
    st.session_state[key] = int(min(max(current, 0), top))


def row_summary(trace: Trace, layer: int, head: int, row: int | None, hide_first: bool, k: int = 3) -> str:
    """The picked token's row of one head in words: the k tokens it looks at most, with their weights."""
    if row is None:
        return "No token of this model covers the picked characters, so no row is outlined."
    weights = normalised(trace.attentions[layer, head])  # (T, T)
    first = 0
    if hide_first:
        if row == 0:
            return "The picked token is the first token, hidden here."
        weights, first = hide_first_token(weights), 1
    looks = weights[row - first, :row - first + 1]  # (row + 1,) causal: only itself and earlier tokens
    best = np.argsort(-looks, kind="stable")[:k]
    parts = ", ".join(f"{first + int(j)}: `{visible(trace.tokens[first + int(j)])}` {looks[j]:.0%}" for j in best)
    return (f"The outlined row is the picked token {row} `{visible(trace.tokens[row])}`; it looks most at {parts}.")
