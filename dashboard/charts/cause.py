"""Charts for the Cause pages (pure: DataFrame -> Altair chart).

- `depth_heatmap`: layers × one model's own tokens, the layers drawn on relative depth (layer / number of
  layers), so two models of different depth drawn at the same height line up row for row;
- `agreement_scatter`: attribution patching against exact patching, cell by cell;
- `shaded_text`: the prompt written once per row (model and method), each token's characters shaded by its
  score, every row on the same character axis (core.text.align.strip_rows places the tokens);
- `token_bars`: one bar per input token;
- `logit_waterfall`: each block's direct effect on the target's logit at the last position, as a running sum;
- `token_effect_bars`: the tokens one block's write pushes up and down most;
- `reads_chart`: the demonstration that attention reads the other tokens and the MLP does not (one model).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from charts.lens import visible

DEPTH_TITLE = "Relative depth (layer / number of layers)"
HEATMAP_PX = 300  # height of the layers axis: the same for both models, so relative depths line up
HEADER_PX = 150  # legend on top + slanted token labels
GRID_PX = 480  # width of a heat map in a half-page column
WIDTH_PX = 860  # width of the shaded text (a full page)
ROW_PX = 34
DIVERGING = "blueorange"  # colour-blind safe; kept in presentation mode (theme.py)
POSITIVE, NEGATIVE = "#D55E00", "#0072B2"  # Okabe–Ito vermillion / blue
BLOCK_COLOURS = {"attn": "#0072B2", "mlp": "#E69F00", "embed": "#999999", "bias": "#555555"}
BLOCK_NAMES = {"embed": "embedding", "attn": "attention", "mlp": "MLP", "bias": "bias"}


def token_column(position: int, token: str) -> str:
    """The label of a token column: 'position: text' (· = a space)."""
    return f"{position}: {visible(token)}"


def _with_depth(table: pd.DataFrame, num_layers: int) -> pd.DataFrame:
    return table.assign(depth0=table["layer"] / num_layers, depth1=(table["layer"] + 1) / num_layers,
                        relative_depth=table["layer"] / num_layers)


def depth_heatmap(table: pd.DataFrame, num_layers: int, value: str, value_title: str, *,
                  diverging: bool = True, domain: tuple[float, float] | None = None, log: bool = False,
                  layer_title: str = "Layer", extra_tooltip: list | None = None,
                  legend_title: str | None = None) -> alt.LayerChart:
    """One model's grid: rows = layers (on relative depth, 0 at the bottom), columns = its tokens.

    `table`: columns layer, position, token and `value`. `diverging`: a blue–white–orange scale centred on 0
    (domain symmetric unless given); else a sequential one (log-scaled when `log`). `legend_title`: a
    shorter title for the legend than the tooltip's `value_title` (a heat map is only half a page wide).
    """
    data = _with_depth(table, num_layers)
    data = data.assign(column=[token_column(p, t) for p, t in zip(data["position"], data["token"])])
    order = list(dict.fromkeys(data.sort_values("position")["column"]))
    if diverging:
        if domain is None:
            top = float(np.nanmax(np.abs(data[value]))) if len(data) else 1.0
            top = top if np.isfinite(top) and top > 0 else 1.0
            domain = (-top, top)
        scale = alt.Scale(scheme=DIVERGING, domain=list(domain), domainMid=0, clamp=True)
    else:
        scale = alt.Scale(scheme="viridis", type="log" if log else "linear", **({"domain": list(domain)} if domain else {}))
    x = alt.X("column:N", sort=order, title="Input token (position: text)",
              axis=alt.Axis(labelAngle=-40, labelLimit=120, orient="top"))
    y = alt.Y("depth0:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1], nice=False))
    tooltip = [alt.Tooltip("layer:Q", title=layer_title), alt.Tooltip("relative_depth:Q", title="Relative depth",
                                                                      format=".2f"),
               alt.Tooltip("column:N", title="Token"), alt.Tooltip(f"{value}:Q", title=value_title, format=".3f")]
    cells = alt.Chart(data).mark_rect().encode(
        x=x, y=y, y2="depth1:Q",
        color=alt.Color(f"{value}:Q", title=legend_title or value_title, scale=scale,
                        legend=alt.Legend(orient="top", direction="horizontal", gradientLength=180,
                                          titleLimit=400, format=",.3~g")),
        tooltip=tooltip + (extra_tooltip or []))
    step = max(28, min(80, GRID_PX // max(len(order), 1)))
    return alt.layer(cells).properties(height=HEATMAP_PX + HEADER_PX, width=alt.Step(step))


def patching_heatmap(table: pd.DataFrame, num_layers: int, site_title: str) -> alt.LayerChart:
    """activation_patching rows of one model and site; colour = the score (0 corrupted run, 1 clean run)."""
    low = min(-0.2, float(np.nanmin(table["score"]))) if len(table) else -0.2
    high = max(1.0, float(np.nanmax(table["score"]))) if len(table) else 1.0
    top = max(abs(low), high)
    layer_title = "Layer (input of block l)" if site_title.startswith("residual") else "Block"
    return depth_heatmap(
        table, num_layers, "score", "Share of the clean answer restored (0 = corrupted, 1 = clean)",
        domain=(-top, top), layer_title=layer_title, legend_title="Score (0 = corrupted run, 1 = clean run)",
        extra_tooltip=[alt.Tooltip("corrupted_token:N", title="Corrupted prompt's token")])


def agreement_scatter(table: pd.DataFrame) -> alt.LayerChart:
    """`table`: model, site, layer, position, token, exact, attribution; the diagonal = perfect agreement."""
    low = float(min(table["exact"].min(), table["attribution"].min(), 0.0))
    high = float(max(table["exact"].max(), table["attribution"].max(), 1.0))
    diagonal = alt.Chart(pd.DataFrame({"x": [low, high], "y": [low, high]})).mark_line(
        color="gray", strokeDash=[4, 3]).encode(x="x:Q", y="y:Q")
    points = alt.Chart(table).mark_point(filled=True, size=45, opacity=0.7).encode(
        x=alt.X("exact:Q", title="Exact patching score"),
        y=alt.Y("attribution:Q", title="Attribution patching score (gradient estimate)"),
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="top", labelLimit=400)),
        shape=alt.Shape("site:N", title="Site", legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("site:N", title="Site"),
                 alt.Tooltip("layer:Q", title="Layer"), alt.Tooltip("token:N", title="Token"),
                 alt.Tooltip("exact:Q", format=".3f"), alt.Tooltip("attribution:Q", format=".3f")])
    return alt.layer(diagonal, points).properties(height=360)


# ---------------------------------------------------------------- input tokens


def shaded_rows(tokens: pd.DataFrame, text: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`tokens`: strip_rows-like rows (row, position, token, start, end, x0, x1, score) of every row;
    returns (token boxes, characters): the characters of `text` repeated on every row."""
    rows = list(dict.fromkeys(tokens["row"]))
    chars = pd.DataFrame([{"row": row, "index": i, "mid": i + 0.5, "char": visible(ch)}
                          for row in rows for i, ch in enumerate(text)])
    return tokens.assign(shown=[visible(t) for t in tokens["token"]]), chars


def shaded_text(tokens: pd.DataFrame, text: str, score_title: str) -> alt.LayerChart:
    """The prompt once per row (a model, or a model and a method), each token's characters shaded by its score.

    `tokens`: columns row, position, token, start, end, x0, x1 (core.text.align.strip_rows), score.
    Orange = the token pushed the model towards the target, blue = away from it, white = no effect.
    A token covering no character (BOS) is the box left of character 0.
    """
    boxes, chars = shaded_rows(tokens, text)
    rows = list(dict.fromkeys(tokens["row"]))
    top = float(np.nanmax(np.abs(tokens["score"]))) if len(tokens) else 1.0
    top = top if np.isfinite(top) and top > 0 else 1.0
    n = max(len(text), 1)
    font = int(max(8, min(16, WIDTH_PX / (n + 1) * 1.4)))
    xscale = alt.Scale(domain=[-1, n], nice=False, zero=False)
    x = alt.X("x0:Q", title="Characters of the prompt (the box left of 0 is the start token)", scale=xscale,
              axis=alt.Axis(format="d", tickMinStep=1))
    y = alt.Y("row:N", sort=rows, title=None, axis=alt.Axis(labelLimit=320))
    shade = alt.Chart(boxes).mark_rect(stroke="#888", strokeWidth=0.6).encode(
        x=x, x2="x1", y=y,
        color=alt.Color("score:Q", title=score_title,
                        scale=alt.Scale(scheme=DIVERGING, domain=[-top, top], domainMid=0),
                        legend=alt.Legend(orient="top", direction="horizontal", gradientLength=220, titleLimit=500)),
        tooltip=[alt.Tooltip("row:N", title="Model"), alt.Tooltip("position:Q", title="Token position"),
                 alt.Tooltip("shown:N", title="Token"), alt.Tooltip("score:Q", title=score_title, format=".3f")])
    letters = alt.Chart(chars).mark_text(fontSize=font, color="black").encode(
        x=alt.X("mid:Q", scale=xscale), y=y, text="char:N")
    # Streamlit fits the legend, the axis and its title inside `height` too (about 150 px together)
    return alt.layer(shade, letters).properties(width=WIDTH_PX, height=ROW_PX * len(rows) + 150)


def token_bars(table: pd.DataFrame, score_title: str) -> alt.Chart:
    """One bar per input token of one model: `table` has position, token, score (and method when several)."""
    data = table.assign(column=[token_column(p, t) for p, t in zip(table["position"], table["token"])],
                        sign=np.where(table["score"] >= 0, "helped", "hurt"))
    order = list(dict.fromkeys(data.sort_values("position")["column"]))
    chart = alt.Chart(data).mark_bar().encode(
        x=alt.X("column:N", sort=order, title="Input token (position: text)", axis=alt.Axis(labelAngle=-40,
                                                                                           labelLimit=120)),
        y=alt.Y("score:Q", title=score_title),
        color=alt.Color("sign:N", title="The token",
                        scale=alt.Scale(domain=["helped", "hurt"], range=[POSITIVE, NEGATIVE]),
                        legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("column:N", title="Token"), alt.Tooltip("score:Q", title=score_title, format=".3f")])
    if "method" in data.columns and data["method"].nunique() > 1:
        chart = chart.encode(xOffset=alt.XOffset("method:N"),
                             opacity=alt.Opacity("method:N", title="Method", scale=alt.Scale(range=[1.0, 0.5]),
                                                 legend=alt.Legend(orient="top")))
    return chart.properties(height=280)


# ---------------------------------------------------------------- block writes


def block_label(layer: int, block: str) -> str:
    """'embedding', 'L3 attention', 'L3 MLP', 'bias'."""
    if block in ("embed", "bias"):
        return BLOCK_NAMES[block]
    return f"L{layer} {BLOCK_NAMES[block]}"


def logit_waterfall(table: pd.DataFrame, logit: float) -> alt.LayerChart:
    """Each block's direct effect at the last position as a running sum, from 0 to the model's logit.

    `table`: block_contributions rows at the last position (layer, block, logit_effect), in model order.
    """
    data = table.reset_index(drop=True)
    ends = data["logit_effect"].cumsum()
    data = data.assign(order=np.arange(len(data)), start=ends - data["logit_effect"], end=ends,
                       label=[block_label(l, b) for l, b in zip(data["layer"], data["block"])],
                       kind=data["block"].map(BLOCK_NAMES))
    labels = data["label"].tolist()
    x = alt.X("label:N", sort=labels, title="Block, in the order the model runs them",
              axis=alt.Axis(labelAngle=-60, labelLimit=90, labelOverlap=True))
    bars = alt.Chart(data).mark_bar().encode(
        x=x, y=alt.Y("start:Q", title="Running sum of effects on the logit"), y2="end:Q",
        color=alt.Color("kind:N", title="Block", scale=alt.Scale(domain=list(BLOCK_NAMES.values()),
                                                                  range=[BLOCK_COLOURS[b] for b in BLOCK_NAMES]),
                        legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("label:N", title="Block"),
                 alt.Tooltip("logit_effect:Q", title="Direct effect on the logit", format="+.3f"),
                 alt.Tooltip("end:Q", title="Running sum", format=".3f")])
    total = alt.Chart(pd.DataFrame({"y": [logit]})).mark_rule(color="black", strokeDash=[4, 3]).encode(y="y:Q")
    return alt.layer(bars, total).properties(height=320)


def token_effect_bars(table: pd.DataFrame) -> alt.Chart:
    """`table`: block_token_effects rows of one block (direction, rank, token, logit_effect)."""
    data = table.assign(shown=[visible(t) for t in table["token"]])
    # the rank keeps two entries that read alike (France / ·France) apart: "·France ↑1", "·villagers ↓2"
    data = data.assign(label=[f"{s}  {'↑' if d == 'promotes' else '↓'}{r}"
                              for s, d, r in zip(data["shown"], data["direction"], data["rank"])])
    order = data.sort_values("logit_effect", ascending=False)["label"].tolist()
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=200, labelOverlap=False)),
        x=alt.X("logit_effect:Q", title="Direct effect on that token's logit"),
        color=alt.Color("direction:N", title=None, scale=alt.Scale(domain=["promotes", "suppresses"],
                                                                   range=[POSITIVE, NEGATIVE]),
                        legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("shown:N", title="Token"), alt.Tooltip("token_id:Q", title="Id"),
                 alt.Tooltip("logit_effect:Q", title="Effect", format="+.3f")],
    ).properties(height=alt.Step(22))


def reads_chart(table: pd.DataFrame, num_layers: int, value: str = "held_output_change") -> alt.Chart:
    """`table`: what_blocks_read rows of one model; one line per sub-block over relative depth.

    One chart per model: the two models' changes differ by orders of magnitude (Gemma's residual stream
    is far larger), so a shared axis would flatten one of them."""
    data = table.assign(relative_depth=table["layer"] / num_layers, kind=table["block"].map(BLOCK_NAMES))
    titles = {"held_output_change": "Output change, input held", "output_change": "Output change",
              "input_change": "Input change"}
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("relative_depth:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1])),
        y=alt.Y(f"{value}:Q", title=f"{titles[value]} (L2 norm)"),
        color=alt.Color("kind:N", title="Sub-block", scale=alt.Scale(domain=["attention", "MLP"],
                                                                    range=[BLOCK_COLOURS["attn"], BLOCK_COLOURS["mlp"]]),
                        legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("layer:Q", title="Layer"), alt.Tooltip("kind:N", title="Sub-block"),
                 alt.Tooltip("input_change:Q", title="Input change", format=".4g"),
                 alt.Tooltip("output_change:Q", title="Output change", format=".4g"),
                 alt.Tooltip("held_output_change:Q", title="Output change, input held", format=".4g")],
    ).properties(height=320)
