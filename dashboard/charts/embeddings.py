"""Embedding charts (pure: DataFrame -> Altair chart).

- the two models' neighbour lists against each other: one row per token, its rank in A and in B;
- a word list projected to 2-D (PCA), one labelled point per word, coloured by group.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

MODEL_COLOURS = ["#4c78a8", "#f58518"]  # A, B


def overlap_chart(overlap: pd.DataFrame, label_a: str = "A", label_b: str = "B") -> alt.Chart:
    """`overlap`: token, rank_a, rank_b (NA when the token is not in that list), in_both.

    One row per token (best rank first); a dot per model at its rank; shared tokens in bold.
    """
    long = overlap.melt(id_vars=["token", "in_both"], value_vars=["rank_a", "rank_b"], var_name="model",
                        value_name="rank").dropna(subset=["rank"])
    long["model"] = long["model"].map({"rank_a": label_a, "rank_b": label_b})
    long["rank"] = long["rank"].astype(int)
    long["shared"] = long["in_both"].map({True: "in both lists", False: "in one list only"})
    order = overlap.assign(best=overlap[["rank_a", "rank_b"]].min(axis=1)).sort_values(["best", "token"])["token"]
    return alt.Chart(long).mark_point(filled=True, size=90).encode(
        y=alt.Y("token:N", sort=list(order), title=None, axis=alt.Axis(labelLimit=160)),
        x=alt.X("rank:Q", title="Rank in the neighbour list (1 = closest)", scale=alt.Scale(zero=False),
                axis=alt.Axis(tickMinStep=1)),
        color=alt.Color("model:N", title="Model", scale=alt.Scale(domain=[label_a, label_b], range=MODEL_COLOURS),
                        legend=alt.Legend(orient="bottom", labelLimit=400)),
        shape=alt.Shape("shared:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("token:N", title="Token"), alt.Tooltip("model:N", title="Model"),
                 alt.Tooltip("rank:Q", title="Rank"), alt.Tooltip("shared:N", title="Shared?")],
    ).properties(height=alt.Step(18))


def projection_chart(points: pd.DataFrame, title: str = "", explained: list[float] | None = None) -> alt.LayerChart:
    """`points`: word, group, x, y, pieces, n_pieces — a labelled scatter, one colour per group."""
    explained = explained or [float("nan"), float("nan")]
    base = alt.Chart(points, title=title).encode(
        x=alt.X("x:Q", title=f"PCA axis 1 ({explained[0]:.0%} of the spread)", axis=alt.Axis(labels=False)),
        y=alt.Y("y:Q", title=f"PCA axis 2 ({explained[1]:.0%} of the spread)", axis=alt.Axis(labels=False)),
        color=alt.Color("group:N", title="Group", scale=alt.Scale(scheme="tableau10"),
                        legend=alt.Legend(orient="bottom", labelLimit=300)),
        tooltip=[alt.Tooltip("word:N", title="Word"), alt.Tooltip("group:N", title="Group"),
                 alt.Tooltip("pieces:N", title="Tokens (their mean is used)"),
                 alt.Tooltip("x:Q", title="Axis 1", format=".3f"), alt.Tooltip("y:Q", title="Axis 2", format=".3f")],
    )
    dots = base.mark_circle(size=90, opacity=0.85)
    labels = base.mark_text(align="left", dx=7, dy=-4, fontSize=13).encode(text="word:N")
    return (dots + labels).properties(height=380)
