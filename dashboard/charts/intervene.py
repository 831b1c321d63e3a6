"""Charts of the Intervene pages (pure: DataFrame -> Altair chart)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from charts.lens import visible

BAR_PX = 22  # height of one token's bar


def next_token_chart(table: pd.DataFrame, temperature: float) -> alt.Chart:
    """Horizontal bars: the top-k next tokens (rank 1 on top) and their probability under softmax(logits / T).

    `table`: next_token_table rows (rank, token, token_id, prob).
    """
    data = table.assign(label=[f"{r}. {visible(t)}" for r, t in zip(table["rank"], table["token"])])
    order = data.sort_values("rank")["label"].tolist()
    base = alt.Chart(data).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=180)),
        x=alt.X("prob:Q", title=f"Probability at T = {temperature:g}", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("rank:Q", title="Rank"), alt.Tooltip("token:N", title="Token"),
                 alt.Tooltip("token_id:Q", title="Token id"),
                 alt.Tooltip("prob:Q", title="Probability", format=".2%")],
    )
    bars = base.mark_bar(color="#4c78a8")
    labels = base.mark_text(align="left", dx=3, fontSize=11).encode(text=alt.Text("prob:Q", format=".1%"))
    return (bars + labels).properties(height=alt.Step(BAR_PX))  # one fixed-height row per token
