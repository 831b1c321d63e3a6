"""Logit-lens charts (pure: DataFrame -> Altair chart).

The grid is layers (rows, last layer on top, as in nostalgebraist's plots)
× positions (columns, labelled by the input token), coloured by the top-1
probability, with the top-1 token written in each cell.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from charts.context import X_FIELDS

CELL_PX = 20  # height of one layer row
GRID_PX = 500  # width of the grid in a half-page column
HEADER_PX = 150  # legend on top + slanted input-token labels


def visible(text: str) -> str:
    """Token text with its spaces, newlines and other control characters made visible (a leading space
    matters: ' Paris'; a byte token \x11 is drawn as its control picture ␑)."""
    text = text.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")
    return "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 else "␡" if c == "\x7f" else c for c in text)


def lens_grid_chart(grid: pd.DataFrame) -> alt.Chart:
    """`grid`: lens_grid rows (layer, position, token, prob, input_token) for the positions to draw."""
    data = grid.assign(
        column=[f"{p}: {visible(t)}" for p, t in zip(grid["position"], grid["input_token"])],
        cell=[visible(t)[:10] for t in grid["token"]],
    )
    order = list(dict.fromkeys(data.sort_values("position")["column"]))
    layers = sorted(data["layer"].unique(), reverse=True)
    base = alt.Chart(data).encode(
        x=alt.X("column:N", sort=order, title="Input token (position: text)",
                axis=alt.Axis(labelAngle=-40, labelLimit=120, orient="top")),
        y=alt.Y("layer:O", sort=layers, title="Layer (0 = token embeddings)"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("prob:Q", title="Top-1 probability", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                        legend=alt.Legend(orient="top", direction="horizontal", gradientLength=160)),
        tooltip=[alt.Tooltip("layer:O", title="Layer"), alt.Tooltip("column:N", title="After input token"),
                 alt.Tooltip("token:N", title="Top next token"), alt.Tooltip("token_id:Q", title="Token id"),
                 alt.Tooltip("prob:Q", title="Probability", format=".1%")],
    )
    text = base.mark_text(fontSize=10).encode(
        text="cell:N",
        color=alt.condition("datum.prob > 0.4", alt.value("white"), alt.value("black")),
    )
    step = max(44, min(96, GRID_PX // max(len(order), 1)))  # wide cells for short prompts, no sideways scrolling
    # Streamlit fits the whole chart (legend and slanted labels included) into `height`: add room for them
    return (cells + text).properties(height=CELL_PX * len(layers) + HEADER_PX, width=alt.Step(step))


def trajectory_chart(trajectories: pd.DataFrame, value: str = "prob", x: str = "relative") -> alt.Chart:
    """A target token's probability or rank at the last position, layer by layer; colour = model."""
    field, title, kind = X_FIELDS[x]
    if value == "rank":
        y = alt.Y("rank:Q", title="Rank (1 = top prediction; log scale)",
                  scale=alt.Scale(type="log", reverse=True))
    else:
        y = alt.Y("prob:Q", title="Probability", axis=alt.Axis(format="%"))
    return alt.Chart(trajectories).mark_line(point=True).encode(
        x=alt.X(field, type=kind, title=title),
        y=y,
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="top", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("token:N", title="Target token"),
                 alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("relative_depth:Q", title="Relative depth", format=".2f"),
                 alt.Tooltip("rank:Q", title="Rank"), alt.Tooltip("prob:Q", title="Probability", format=".2%")],
    ).properties(height=360)
