"""The alignment strip: both models' tokens of one prompt, placed by the characters they cover.

Top row: the characters of the prompt; one row per model below it: each token is a box
spanning its characters (core.text.align.strip_rows; byte pieces of one character split its
width; BOS sits left of character 0). Grey vertical rules mark the cuts both tokenizations
share, so the text between two rules is a "shared span". The picked span and the tokens
that cover it are highlighted.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from charts.lens import visible

WIDTH_PX = 860  # about a full page width: used to fit token labels into their boxes
CHAR_PX = 7  # width of one label character at fontSize 11
ROW_PX = 32  # height of one row (the text, then each model)
AXIS_PX = 80  # the character axis and its title
PICKED = "#E69F00"  # Okabe-Ito orange: readable for colour-blind viewers
OTHER = "#e8e8e8"


def _fit(text: str, px: float) -> str:
    """The label that fits a box of `px` pixels ('' when even one character does not)."""
    room = int(px // CHAR_PX)
    shown = visible(text)
    return shown if len(shown) <= room else (shown[:room - 1] + "…" if room >= 2 else "")


def alignment_strip(rows: pd.DataFrame, text: str, window: tuple[int, int], span: tuple[int, int],
                    cuts: list[int], row_titles: dict[str, str], selection: str = "token") -> alt.LayerChart:
    """`rows`: core.text.align.strip_rows for the window; `text`: the prompt; `window`: characters drawn;
    `span`: the picked characters; `cuts`: shared cut positions; `row_titles`: {label: row name}.
    Clicking a token box selects its (model, position) under the selection parameter `selection`."""
    lo, hi = window
    px_per_char = WIDTH_PX / max(hi - lo + 1, 1)
    order = ["text"] + [row_titles[label] for label in row_titles]
    chars = pd.DataFrame({"x0": range(lo, hi), "x1": range(lo + 1, hi + 1), "row": "text",
                          "char": [visible(c) for c in text[lo:hi]], "index": range(lo, hi),
                          "selected": [span[0] <= i < span[1] for i in range(lo, hi)]})
    tokens = rows.assign(row=rows["model"].map(row_titles),
                         label=[_fit(t, (b - a) * px_per_char) for t, a, b in zip(rows["token"], rows["x0"], rows["x1"])],
                         shown=[visible(t) for t in rows["token"]])
    x = alt.X("x0:Q", title=f"characters {lo}–{hi - 1} of the prompt",
              scale=alt.Scale(domain=[lo - 1, hi], nice=False, zero=False), axis=alt.Axis(format="d", tickMinStep=1))
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=260))
    fill = alt.condition("datum.selected", alt.value(PICKED), alt.value(OTHER))
    click = alt.selection_point(name=selection, fields=["model", "position"], on="click", clear=False)
    boxes = alt.Chart(tokens).mark_rect(stroke="white", strokeWidth=1.5, cursor="pointer").add_params(click).encode(
        x=x, x2="x1", y=y, color=fill,
        tooltip=[alt.Tooltip("row:N", title="Model"), alt.Tooltip("position:Q", title="Token position"),
                 alt.Tooltip("shown:N", title="Token"), alt.Tooltip("start:Q", title="First character"),
                 alt.Tooltip("end:Q", title="End (exclusive)")])
    labels = alt.Chart(tokens).mark_text(fontSize=11, dx=2, align="left").encode(
        x=x, y=y, text="label:N")
    char_boxes = alt.Chart(chars).mark_rect(stroke="white").encode(
        x=x, x2="x1", y=y, color=alt.condition("datum.selected", alt.value(PICKED), alt.value("white")),
        tooltip=[alt.Tooltip("index:Q", title="Character"), alt.Tooltip("char:N", title="Text")])
    char_text = alt.Chart(chars.assign(mid=chars["x0"] + 0.5)).mark_text(fontSize=12).encode(
        x=alt.X("mid:Q", scale=alt.Scale(domain=[lo - 1, hi], nice=False, zero=False)), y=y, text="char:N")
    shared = pd.DataFrame({"cut": [c for c in cuts if lo <= c <= hi]})
    rules = alt.Chart(shared).mark_rule(color="#777", strokeDash=[3, 2]).encode(x=alt.X("cut:Q"))
    # Streamlit fits the axis and its title inside `height` too: ROW_PX per row plus AXIS_PX for them
    return alt.layer(char_boxes, boxes, rules, labels, char_text).properties(
        width=WIDTH_PX, height=ROW_PX * len(order) + AXIS_PX)


def with_picked_row(heatmap: alt.Chart, cells: pd.DataFrame, position: int | None) -> alt.Chart | alt.LayerChart:
    """The head heatmap (charts.attention.head_heatmap of `cells`) with the picked token's row outlined.

    `position` is the picked query position; outside the drawn window (or None) the heatmap is returned as is.
    """
    row = cells[(cells["query_pos"] == position) & ~cells["future"]]
    if position is None or row.empty:
        return heatmap
    order = list(dict.fromkeys(cells.sort_values("query_pos")["query"]))
    outline = alt.Chart(row).mark_rect(fillOpacity=0, stroke=PICKED, strokeWidth=2.5).encode(
        x=alt.X("key:N", sort=order), y=alt.Y("query:N", sort=order))
    base = heatmap.copy()
    height, base.height = base.height, alt.Undefined  # a layer takes its size from the top level
    return alt.layer(base, outline).properties(height=height)


def with_picked_column(grid: alt.LayerChart, position: int | None) -> alt.LayerChart:
    """The logit-lens grid (charts.lens.lens_grid_chart) with the picked position's column outlined.

    Reads the grid's own cells (Altair keeps data its layers share on the layer chart), so the column
    labels are exactly the grid's.
    """
    data = grid.data if isinstance(grid.data, pd.DataFrame) else grid.layer[0].data
    column = data[data["position"] == position]
    if position is None or column.empty:
        return grid
    order = list(dict.fromkeys(data.sort_values("position")["column"]))
    layers = sorted(data["layer"].unique(), reverse=True)
    outline = alt.Chart(column).mark_rect(fillOpacity=0, stroke=PICKED, strokeWidth=2.5).encode(
        x=alt.X("column:N", sort=order), y=alt.Y("layer:O", sort=layers))
    return grid + outline  # appended to the grid's layers: its size and axes stay
