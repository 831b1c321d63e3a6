"""Architecture charts (pure: DataFrame -> Altair chart).

- parameters by component, A and B side by side (log scale optional: norms are tiny);
- weight heatmaps: diverging red/blue centred at 0, symmetric colour range;
- the value histogram of a tensor.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


def component_chart(breakdown: pd.DataFrame, log: bool = False) -> alt.Chart:
    """`breakdown`: model, component, parameters, share, what. Horizontal bars, one colour per model."""
    order = list(dict.fromkeys(breakdown["component"]))
    x = alt.X("parameters:Q", title="Parameters" + (" (log scale)" if log else ""),
              scale=alt.Scale(type="log") if log else alt.Scale(), axis=alt.Axis(format="~s"))
    return alt.Chart(breakdown).mark_bar().encode(
        y=alt.Y("component:N", sort=order, title=None, axis=alt.Axis(labelLimit=200)),
        yOffset=alt.YOffset("model:N"),
        x=x,
        color=alt.Color("model:N", title="Model", legend=alt.Legend(orient="bottom", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N", title="Model"), alt.Tooltip("component:N", title="Component"),
                 alt.Tooltip("parameters:Q", title="Parameters", format=","),
                 alt.Tooltip("share:Q", title="Share of the model", format=".1%"),
                 alt.Tooltip("what:N", title="What it does")],
    ).properties(height=alt.Step(11))


def weight_heatmap(cells: pd.DataFrame, title: str = "", limit: float | None = None) -> alt.Chart:
    """`cells`: row, column, value (original matrix indices). Red > 0, blue < 0, white = 0.

    The colour range is ±limit (default: the 99th percentile of |value|, so one outlier does
    not wash out the picture); values beyond it get the strongest colour.
    """
    if limit is None:
        magnitude = np.abs(cells["value"].to_numpy())
        limit = float(np.percentile(magnitude, 99)) if magnitude.size else 1.0
    limit = limit or 1.0
    rows, cols = cells["row"].nunique(), cells["column"].nunique()
    size = 360
    return alt.Chart(cells, title=title).mark_rect().encode(
        x=alt.X("column:O", title="Column (input index)", axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("row:O", title="Row (output index)", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("value:Q", title="Value",
                        scale=alt.Scale(scheme="redblue", reverse=True, domain=[-limit, limit], clamp=True)),
        tooltip=[alt.Tooltip("row:Q", title="Row"), alt.Tooltip("column:Q", title="Column"),
                 alt.Tooltip("value:Q", title="Value", format=".4f")],
    ).properties(width=size if cols > 1 else 60, height=size if rows > 1 else 24)


def histogram_chart(hist: pd.DataFrame) -> alt.Chart:
    """`hist`: from, to, count — the distribution of a tensor's values."""
    return alt.Chart(hist).mark_bar().encode(
        x=alt.X("from:Q", bin="binned", title="Value"),
        x2="to:Q",
        y=alt.Y("count:Q", title="How many values"),
        tooltip=[alt.Tooltip("from:Q", title="From", format=".4f"), alt.Tooltip("to:Q", title="To", format=".4f"),
                 alt.Tooltip("count:Q", title="Count", format=",")],
    ).properties(height=180)
