"""Charts for the Patchscopes and Steering pages (pure: DataFrame -> Altair chart).

Both models share one horizontal axis, relative depth = layer / number of layers, so a
30-layer and an 18-layer model line up.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

DEPTH = alt.X("relative_depth:Q", title="Relative depth (layer / number of layers)", scale=alt.Scale(domain=[0, 1]))
SCORES = {  # layer_sweep column -> axis title
    "shift": "Log-odds shift towards list-1 words (nats)",
    "kl": "Change of the next token (KL, nats)",
}
PICK = "pick"  # name of the click selection (the page reads it to set the layer slider)


def sweep_chart(table: pd.DataFrame, score: str = "shift", chosen_depth: float | None = None) -> alt.LayerChart:
    """Score of steering at each layer, both models; click a point to choose that layer.

    `table`: layer_sweep rows of both models plus a `model` column. A vertical rule marks
    `chosen_depth` (the layer slider). Selection parameter: PICK (fields model, layer, relative_depth).
    """
    pick = alt.selection_point(name=PICK, fields=["model", "layer", "relative_depth"], on="click")
    base = alt.Chart(table).encode(
        x=DEPTH,
        y=alt.Y(f"{score}:Q", title=SCORES[score]),
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="top", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("relative_depth:Q", title="Relative depth", format=".2f"),
                 alt.Tooltip("shift:Q", title="Change in log-odds", format=".2f"),
                 alt.Tooltip("kl:Q", title="KL", format=".3f"),
                 alt.Tooltip("top_token:N", title="Most common next token, steered")],
    )
    lines = base.mark_line()
    points = base.mark_point(filled=True, size=70, cursor="pointer").encode(
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.35))).add_params(pick)
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="gray", strokeDash=[2, 2]).encode(y="y:Q")
    layers = [zero, lines, points]
    if chosen_depth is not None:
        layers.append(alt.Chart(pd.DataFrame({"relative_depth": [chosen_depth]})).mark_rule(color="black")
                      .encode(x="relative_depth:Q"))
    return alt.layer(*layers).properties(height=320)


def patchscope_depth_chart(table: pd.DataFrame) -> alt.LayerChart:
    """What each model says at each source layer, on one relative-depth axis: a row of dots per model.

    `table`: columns model, layer, relative_depth, answer (short text), text, changed. The colour is the
    answer (the same answer, the same colour across models); the answer is written where it changes.
    """
    base = alt.Chart(table).encode(
        x=DEPTH,
        y=alt.Y("model:N", title=None, axis=alt.Axis(labelLimit=260)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("relative_depth:Q", title="Relative depth", format=".2f"),
                 alt.Tooltip("answer:N", title="Answer"), alt.Tooltip("text:N", title="Whole continuation")],
    )
    dots = base.mark_circle(size=180).encode(color=alt.Color("answer:N", legend=None))
    labels = base.transform_filter(alt.datum.changed).mark_text(angle=320, align="left", dx=4, dy=-10,
                                                                fontSize=11, limit=160).encode(text="answer:N")
    return alt.layer(dots, labels).properties(height=alt.Step(110))
