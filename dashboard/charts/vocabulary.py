"""Vocabulary charts (pure: DataFrame -> Altair chart or HTML).

- token chips: each token a coloured box with its id underneath; spaces shown as ␣,
  newlines as ↵, pieces of a UTF-8 character as their bytes (<E5 A4>);
- tokens per character for a set of sample texts, one bar per model;
- the overlap of two vocabularies as one stacked bar.
"""

from __future__ import annotations

import html
import re

import altair as alt
import pandas as pd

CHIP_COLOURS = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f2f8"]


BYTES = re.compile(r"<[0-9A-F]{2}( [0-9A-F]{2})*>")  # display_token's notation for part of a character


def visible(text: str) -> str:
    """Spaces as ␣, newlines as ↵, tabs as ⇥ (a leading space matters); byte notation left alone."""
    if BYTES.fullmatch(text):
        return text
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def token_chips(tokens: pd.DataFrame, special_ids: set[int] | None = None) -> str:
    """`tokens`: tokenize() rows (token_id, text). HTML of wrapping chips; special tokens in grey."""
    special_ids = special_ids or set()
    chips = []
    for i, (token_id, text) in enumerate(zip(tokens["token_id"], tokens["text"])):
        colour = "#e0e0e0" if token_id in special_ids else CHIP_COLOURS[i % len(CHIP_COLOURS)]
        chips.append(
            f'<span title="position {i}, id {token_id}" style="display:inline-block;margin:2px;padding:2px 5px;'
            f'border-radius:4px;background:{colour};color:#222;font-family:monospace;text-align:center;'
            f'line-height:1.2">{html.escape(visible(str(text)))}<br>'
            f'<small style="color:#666">{token_id}</small></span>'
        )
    return '<div style="line-height:2.2;overflow-wrap:anywhere">' + "".join(chips) + "</div>"


def tokens_per_character_chart(table: pd.DataFrame) -> alt.Chart:
    """`table`: model, sample, characters, tokens, tokens_per_character."""
    order = list(dict.fromkeys(table["sample"]))
    return alt.Chart(table).mark_bar().encode(
        y=alt.Y("sample:N", sort=order, title=None),
        yOffset=alt.YOffset("model:N"),
        x=alt.X("tokens_per_character:Q", title="Tokens per character (lower = the model reads it in bigger pieces)"),
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="bottom", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("sample:N", title="Text"),
                 alt.Tooltip("characters:Q", title="Characters"), alt.Tooltip("tokens:Q", title="Tokens"),
                 alt.Tooltip("tokens_per_character:Q", title="Tokens per character", format=".2f")],
    ).properties(height=alt.Step(16))


def overlap_chart(counts: pd.DataFrame) -> alt.Chart:
    """`counts`: where ("only in A", "shared", "only in B"), tokens — one horizontal bar per group."""
    order = ["only in A", "shared", "only in B"]
    return alt.Chart(counts).mark_bar().encode(
        y=alt.Y("where:N", sort=order, title=None),
        x=alt.X("tokens:Q", title="Vocabulary entries"),
        color=alt.Color("where:N", sort=order, legend=None,
                        scale=alt.Scale(domain=order, range=["#4c78a8", "#9d9d9d", "#f58518"])),
        tooltip=[alt.Tooltip("where:N", title="Where"), alt.Tooltip("tokens:Q", title="Entries", format=",")],
    ).properties(height=alt.Step(28))
