"""Charts for the hidden-state maps page (pure: DataFrame -> Altair chart)."""

from __future__ import annotations

import altair as alt
import pandas as pd

MEASURES = {  # core.running.maps.separation column -> label on the chart
    "silhouette": "Silhouette (cosine)",
    "probe_accuracy": "Nearest-centroid accuracy (leave-one-out)",
}


def map_chart(points: pd.DataFrame, title: str = "") -> alt.Chart:
    """One layer's 2-D map: a point per (sentence, word), colour and shape = the user's group.

    `points` holds core.running.maps.map_points rows of one layer (x, y, group, word, text, sentence,
    explained_x, explained_y). Shape repeats the colour so groups stay apart in grey print and
    for colour-blind viewers.
    """
    explained_x, explained_y = (float(points[c].iloc[0]) if len(points) else 0.0 for c in ("explained_x", "explained_y"))
    group = alt.Legend(orient="top", title="Group", labelLimit=300)
    return alt.Chart(points, title=title).mark_point(size=110, filled=True, opacity=0.85).encode(
        x=alt.X("x:Q", title=f"PCA axis 1 ({explained_x:.0%} of the spread)", axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("y:Q", title=f"PCA axis 2 ({explained_y:.0%} of the spread)", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("group:N", legend=group),
        shape=alt.Shape("group:N", legend=group),
        tooltip=[alt.Tooltip("group:N", title="Group"), alt.Tooltip("word:N", title="Word"),
                 alt.Tooltip("sentence:Q", title="Sentence no."), alt.Tooltip("text:N", title="Sentence"),
                 alt.Tooltip("layer:Q", title="Layer")],
    ).properties(height=380)


def separation_long(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """{model title: core.running.maps.separation table} -> long rows: model, layer, relative_depth, measure, value."""
    frames = [table.assign(model=model) for model, table in tables.items()]
    wide = pd.concat(frames, ignore_index=True)
    long = wide.melt(id_vars=["model", "layer", "relative_depth"], value_vars=list(MEASURES),
                     var_name="measure", value_name="value")
    return long.assign(measure=long["measure"].map(MEASURES))


def separation_chart(long: pd.DataFrame, depth: float | None = None) -> alt.LayerChart | alt.Chart:
    """How well the groups separate, against relative depth: colour = model, dash = measure.

    `long` comes from separation_long; `depth` draws a vertical rule at the depth shown in the maps.
    """
    lowest = long["value"].min()
    floor = min(-0.2, float(lowest)) if pd.notna(lowest) else -0.2  # silhouettes can go down to -1
    lines = alt.Chart(long).mark_line(point=alt.OverlayMarkDef(size=30)).encode(
        x=alt.X("relative_depth:Q", title="Relative depth (layer / number of layers)",
                scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("value:Q", title="Separation (1 = groups apart)", scale=alt.Scale(domain=[floor, 1])),
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="top", labelLimit=400)),
        strokeDash=alt.StrokeDash("measure:N", title="Measure", legend=alt.Legend(orient="top", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("measure:N", title="Measure"),
                 alt.Tooltip("layer:Q", title="Layer"),
                 alt.Tooltip("relative_depth:Q", title="Relative depth", format=".2f"),
                 alt.Tooltip("value:Q", title="Value", format=".3f")],
    ).properties(height=340)
    if depth is None:
        return lines
    rule = alt.Chart(pd.DataFrame({"relative_depth": [depth]})).mark_rule(strokeDash=[2, 2], color="gray").encode(
        x="relative_depth:Q", tooltip=[alt.Tooltip("relative_depth:Q", title="Shown in the maps", format=".2f")])
    return alt.layer(lines, rule)
