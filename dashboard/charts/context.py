"""Charts for the hidden-state and contextual-similarity pages (pure: DataFrame -> Altair chart)."""

from __future__ import annotations

import altair as alt
import pandas as pd

X_FIELDS = {  # x-axis choice -> (column, title, type)
    "relative": ("relative_depth", "Relative depth (layer / number of layers)", "quantitative"),
    "layer": ("layer", "Layer (0 = token embeddings)", "quantitative"),
}

Y_TITLES = {
    "cosine": "Cosine similarity",
    "normalized": "Cosine ÷ average cosine of token pairs (all sentences)",
    "pair_normalized": "Cosine ÷ average cosine of token pairs (own two sentences)",
}


def difference_chart(summary: pd.DataFrame) -> alt.Chart:
    """Largest difference between a word's vectors across sentences, per layer (0 = identical)."""
    return alt.Chart(summary).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="Layer (0 = token embeddings)", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("max_difference:Q", title="Max difference"),
        color=alt.Color("word:N", title="Word", legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("word:N", title="Word"), alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("max_difference:Q", title="Largest difference", format=".6f"),
                 alt.Tooltip("identical:N", title="Identical")],
    ).properties(height=300)


def similarity_chart(curves: pd.DataFrame, value: str, x: str = "relative") -> alt.Chart:
    """Both models on one chart: colour = sentence pair, dash = model.

    `curves` holds similarity_curves rows of both models plus columns `model` and `label`
    (the pair named by its sentences). `value`: "cosine", "normalized" (pooled baseline)
    or "pair_normalized" (each pair's own two sentences).
    """
    field, title, kind = X_FIELDS[x]
    y_title = Y_TITLES[value]
    return alt.Chart(curves).mark_line(point=alt.OverlayMarkDef(size=25)).encode(
        x=alt.X(field, type=kind, title=title),
        y=alt.Y(f"{value}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("label:N", title="Sentence pair", legend=alt.Legend(orient="right", labelLimit=420)),
        strokeDash=alt.StrokeDash("model:N", title="Model", legend=alt.Legend(orient="right", labelLimit=420)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("label:N", title="Pair"),
                 alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("relative_depth:Q", title="Relative depth", format=".2f"),
                 alt.Tooltip("cosine:Q", title="Cosine", format=".3f"),
                 alt.Tooltip("baseline:Q", title="Average cosine, all sentences", format=".3f"),
                 alt.Tooltip("normalized:Q", title="Normalized, all sentences", format=".3f"),
                 alt.Tooltip("pair_baseline:Q", title="Average cosine, own two sentences", format=".3f"),
                 alt.Tooltip("pair_normalized:Q", title="Normalized, own two sentences", format=".3f")],
    ).properties(height=480)
