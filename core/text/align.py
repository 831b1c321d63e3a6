"""One word, both tokenizers: align two models' tokens of the same text by character span.

Two tokenizers cut the same prompt differently (SmolLM2 splits 大 into byte
pieces, Gemma keeps 大家好 whole), so "token 3" means different text in each
model. What both share is the text itself. Each token of a `Trace` carries its
character span `offsets[i] = (start, end)` in the prompt (the tokenizer's
offset mapping; BOS and other added tokens are (0, 0), covering no
character; byte-level pieces of one character share that character's span).
Everything here is a pure function of those spans:

- `covering_tokens`: the tokens of a model that overlap a character span;
- `word_spans`: the words of the prompt (letters/digits with their combining
  marks; runs of other symbols such as emoji or punctuation);
- `shared_segments` / `alignment_table`: the smallest pieces of text that both
  tokenizations cut at the same places, with each model's tokens in them;
- `strip_rows`: one row per token, positioned by character span, for the strip chart;
- `select`: a picked word, or a picked token of one model, as each model's tokens.

A selection of several tokens is read at its LAST token (`focus`): in a causal
model that is the only one of them whose hidden state has seen the whole span.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

# characters that belong to the previous character (they never start a word of their own)
_JOINERS = {"\u200d", "\u200c"}  # zero-width joiner / non-joiner (emoji sequences, Indic scripts)


def _attaches(ch: str) -> bool:
    """Combining marks, variation selectors, joiners and emoji skin-tone modifiers extend the previous character."""
    return (unicodedata.category(ch).startswith("M") or ch in _JOINERS
            or "\ufe00" <= ch <= "\ufe0f" or "\U0001f3fb" <= ch <= "\U0001f3ff")


def _kind(ch: str) -> str:
    if ch.isspace():
        return "space"
    return "word" if ch.isalnum() or ch == "_" else "symbol"


def word_spans(text: str, limit: int | None = None) -> list[tuple[int, int]]:
    """Character spans (start, end) of the words of `text`, in order, ending at or before `limit`.

    A word is a run of letters/digits (any script: 大家好 is one run, as the text has no spaces);
    any other non-space run (punctuation, emoji with their modifiers and joiners) is a span of its
    own. Combining marks stay with the letter before them ("e\\u0301té" is one word), and so does an
    apostrophe between letters ("don't").
    """
    spans: list[tuple[int, int]] = []
    start, kind = None, None
    for i, ch in enumerate(text):
        if start is not None and _attaches(ch):
            continue
        if kind == "word" and ch in "'’" and text[i + 1:i + 2].isalnum():  # don't, l’eau: one word
            continue
        current = _kind(ch)
        if current != kind or current == "space":
            if start is not None and kind != "space":
                spans.append((start, i))
            start, kind = i, current
    if start is not None and kind != "space":
        spans.append((start, len(text)))
    if limit is not None:
        spans = [(s, e) for s, e in spans if e <= limit]
    return spans


def seen_chars(offsets: np.ndarray) -> int:
    """How many characters of the prompt the tokens cover: the end of the last non-empty span."""
    offsets = np.asarray(offsets).reshape(-1, 2)
    return int(offsets[:, 1].max()) if len(offsets) else 0


def covering_tokens(offsets: np.ndarray, start: int, end: int) -> list[int]:
    """Positions of the tokens that cover any character of [start, end).

    An empty span (start == end, e.g. a BOS token picked in the other model) selects this model's
    own empty-span tokens at that place (its BOS), if any.
    """
    offsets = np.asarray(offsets).reshape(-1, 2)  # (T, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    if end <= start:
        hits = (starts == ends) & (starts == start)
    else:
        hits = (starts < end) & (ends > start) & (ends > starts)
    return [int(p) for p in np.flatnonzero(hits)]


def tokens_span(offsets: np.ndarray, positions) -> tuple[int, int]:
    """The characters covered by the tokens at `positions`, as one span (start, end)."""
    offsets = np.asarray(offsets).reshape(-1, 2)
    picked = offsets[list(positions)]
    if not len(picked):
        raise ValueError("No token picked.")
    return int(picked[:, 0].min()), int(picked[:, 1].max())


def shared_segments(offsets_list, length: int) -> list[tuple[int, int]]:
    """The smallest spans of [0, length) that every tokenization cuts at both ends.

    A cut between characters c-1 and c is shared when no token of any model covers both
    (start < c < end). Segments that no token covers (e.g. text past the token limit) are dropped.
    """
    inside = np.zeros(length + 1, dtype=bool)  # inside[c]: some token straddles the cut before character c
    for offsets in offsets_list:
        for start, end in np.asarray(offsets).reshape(-1, 2):
            if end - start > 1:
                inside[start + 1:end] = True
    cuts = [c for c in range(length + 1) if not inside[c]]
    covered = np.zeros(length, dtype=bool)
    for offsets in offsets_list:
        for start, end in np.asarray(offsets).reshape(-1, 2):
            covered[start:end] = True
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if covered[a:b].any()]


def alignment_table(text: str, tokenizations: dict[str, tuple]) -> pd.DataFrame:
    """One row per shared segment: start, end, text, then per model `tokens <label>` and `positions <label>`.

    `tokenizations`: {label: (tokens, offsets)}. Tokens that cover no character (BOS) are left out.
    """
    length = max((seen_chars(offsets) for _, offsets in tokenizations.values()), default=0)
    rows = []
    for start, end in shared_segments([offsets for _, offsets in tokenizations.values()], length):
        row = {"start": start, "end": end, "text": text[start:end]}
        for label, (tokens, offsets) in tokenizations.items():
            positions = covering_tokens(offsets, start, end)
            row[f"tokens {label}"] = " | ".join(tokens[p] for p in positions)
            row[f"positions {label}"] = ", ".join(str(p) for p in positions)
        rows.append(row)
    columns = ["start", "end", "text"] + [f"{kind} {label}" for label in tokenizations for kind in ("tokens", "positions")]
    return pd.DataFrame(rows, columns=columns)


def strip_rows(tokenizations: dict[str, tuple], selected: dict[str, list[int]],
               window: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per token for the alignment strip: model, position, token, start, end, x0, x1, selected.

    x0..x1 is where the token is drawn on the character axis: its span, except that k tokens sharing
    one span (byte pieces of one character) split it into k equal parts, and a token covering no
    character (BOS) is drawn in the unit just left of character 0. `window` (start, end) keeps only
    tokens overlapping those characters (a long prompt's strip is drawn around the selection).
    """
    rows = []
    for label, (tokens, offsets) in tokenizations.items():
        offsets = np.asarray(offsets).reshape(-1, 2)
        picked = set(selected.get(label, []))
        groups: dict[tuple[int, int], list[int]] = {}
        for position, (start, end) in enumerate(offsets):
            groups.setdefault((int(start), int(end)), []).append(position)
        for (start, end), positions in groups.items():
            left, width = (start - 1.0, 1.0) if end == start else (float(start), float(end - start))
            for k, position in enumerate(positions):
                if window is not None and not (start < window[1] and max(end, start + 1) > window[0]):
                    continue
                rows.append({"model": label, "position": position, "token": tokens[position], "start": start,
                             "end": end, "x0": left + width * k / len(positions),
                             "x1": left + width * (k + 1) / len(positions), "selected": position in picked})
    return pd.DataFrame(rows, columns=["model", "position", "token", "start", "end", "x0", "x1", "selected"])


@dataclass(frozen=True)
class Selection:
    """What was picked: the character span, and each model's tokens that cover it."""

    span: tuple[int, int]
    positions: dict[str, tuple[int, ...]]
    picked_in: str | None = None  # the model whose token was picked; None for a word

    def focus(self, label: str) -> int | None:
        """The position each single-position view reads: the last selected token (it has seen the whole span)."""
        positions = self.positions.get(label, ())
        return positions[-1] if positions else None


def select(offsets: dict[str, np.ndarray], span: tuple[int, int] | None = None,
           token: tuple[str, int] | None = None) -> Selection:
    """Each model's tokens for a picked word `span` (characters) or a picked `token` (label, position).

    The model whose token was picked keeps exactly that token; every other model gets the tokens
    that cover the same characters.
    """
    if token is not None:
        label, position = token
        start, end = (int(v) for v in np.asarray(offsets[label]).reshape(-1, 2)[position])
        positions = {other: tuple(covering_tokens(o, start, end)) for other, o in offsets.items()}
        positions[label] = (int(position),)
        return Selection((start, end), positions, picked_in=label)
    if span is None:
        raise ValueError("Pick a word or a token.")
    start, end = int(span[0]), int(span[1])
    return Selection((start, end), {label: tuple(covering_tokens(o, start, end)) for label, o in offsets.items()})
