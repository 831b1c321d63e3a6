"""Attention charts: one head up close (Altair) and every head of every layer as one image.

Why an image for the grid: 28 layers × 24 heads drawn as 672 separate Altair
charts take ~20 s in the browser, one faceted chart ~4 s at 12 tokens and
cannot draw 128 tokens at all (5.5 M rectangles). NumPy -> one PNG through
Pillow draws in about a second at any prompt length: each head becomes a small
tile, upscaled by whole pixels for short prompts and max-pooled for long ones
(max, so a single strong weight stays visible).
"""

from __future__ import annotations

import io

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from core.running.attention import hide_first_token

# viridis (the colour scale of the lecture's plots and of Altair's "viridis"), 9 anchors
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 82, 139), (44, 113, 142), (33, 145, 140),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32)
LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_VIRIDIS)), _VIRIDIS[:, c])
                for c in range(3)], axis=1).astype(np.uint8)  # (256, 3)
FUTURE = (225, 225, 225)  # the causal upper triangle: light grey
GROUP_LINE = (120, 120, 120)  # between groups of query heads sharing a KV head
SLIDING = (217, 95, 2)  # orange label: sliding-window (local) layer
SELECTED = (230, 0, 0)
GAP = 3  # pixels between tiles
LOG_FLOOR = 1e-3  # log colour scale spans 0.001 .. 1 of the maximum
GRID_WIDTH_PX = 860  # target width of the tiles: about what a page column shows, so nothing is rescaled
TILE_MAX_PX = 52  # few heads (Gemma 270M has 4) still get small squares, so the grid stays one screen wide


def colour_values(maps: np.ndarray, log_scale: bool, shared_scale: bool) -> np.ndarray:
    """Map weights (..., n, n) to 0..1 colour positions: divided by the shared or per-head maximum."""
    if shared_scale:
        top = np.nanmax(maps)
    else:
        top = np.nanmax(maps, axis=(-2, -1), keepdims=True)
    values = maps / np.maximum(top, 1e-12)
    if log_scale:
        values = 1 + np.log10(np.maximum(values, LOG_FLOOR)) / -np.log10(LOG_FLOOR)
    return np.clip(values, 0, 1)


def tile_size(n: int, heads: int) -> int:
    """Pixels per head tile: whole-pixel upscaling of short prompts, about GRID_WIDTH_PX across."""
    target = int(np.clip(GRID_WIDTH_PX // heads, 16, TILE_MAX_PX))
    return n * max(1, target // n) if n <= target else target


def _resample(maps: np.ndarray, size: int) -> np.ndarray:
    """(..., n, n) -> (..., size, size): repeat pixels (size >= n) or max-pool blocks (size < n)."""
    n = maps.shape[-1]
    starts = np.arange(size) * n // size
    # reduceat over [starts[i], starts[i+1]); a repeated start just copies that row
    return np.fmax.reduceat(np.fmax.reduceat(maps, starts, axis=-2), starts, axis=-1)


def _font(size: int):
    return ImageFont.load_default(size=size)


def grid_image(maps: np.ndarray, *, hide_first: bool = False, log_scale: bool = False, shared_scale: bool = True,
               layer_kinds: list[str] | None = None, kv_heads: np.ndarray | None = None,
               selected: tuple[int, int] | None = None, title: str = "") -> Image.Image:
    """Every layer (rows) × every head (columns) of `maps` (layers, heads, n, n) as one labelled image.

    The upper triangle (a token cannot look ahead) is light grey; head numbers on
    top, layer numbers on the left (orange = sliding-window layer); grey lines
    separate query heads that share a KV head; `selected` (layer, head) is boxed red.
    `hide_first` drops token 0 and renormalises the rows (core.running.attention.hide_first_token), layer by layer.
    """
    layers, heads, n, _ = maps.shape
    n -= int(hide_first)
    cell, gap = tile_size(n, heads), GAP
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    tiles = np.empty((layers, heads, cell, cell), dtype=np.float32)
    for layer in range(layers):  # one layer at a time: bounded memory for long prompts
        m = hide_first_token(maps[layer]) if hide_first else maps[layer].astype(np.float32)  # (heads, n, n)
        m[:, future] = np.nan
        tiles[layer] = _resample(m, cell)
    values = colour_values(tiles, log_scale, shared_scale)  # (L, H, cell, cell), NaN = future
    rgb = LUT[np.nan_to_num(values * 255).astype(np.uint8)]  # (L, H, cell, cell, 3)
    rgb[np.isnan(values)] = FUTURE

    # tiles with gaps: (L, cell+gap, H, cell+gap, 3) -> one picture
    block = np.full((layers, cell + gap, heads, cell + gap, 3), 255, dtype=np.uint8)
    block[:, :cell, :, :cell] = rgb.transpose(0, 2, 1, 3, 4)
    if kv_heads is not None:
        boundary = np.flatnonzero(np.diff(kv_heads) != 0)  # last query head of each KV group
        block[:, :, boundary, cell:] = GROUP_LINE
    body = block.reshape(layers * (cell + gap), heads * (cell + gap), 3)

    font_size = int(np.clip(cell * 0.45, 11, 22))
    font = _font(font_size)
    left, top = int(font_size * 2.6), int(font_size * (3.4 if title else 1.8))
    width = max(left + body.shape[1], int(font.getlength(title)) + 4)
    canvas = Image.new("RGB", (width, top + body.shape[0] + font_size // 2), "white")
    canvas.paste(Image.fromarray(body), (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 2), title, fill="black", font=font)
    for head in range(heads):
        draw.text((left + head * (cell + gap) + cell / 2, top - 2), str(head), fill="black", font=font, anchor="mb")
    for layer in range(layers):
        kind = layer_kinds[layer] if layer_kinds else "global"
        draw.text((left - 4, top + layer * (cell + gap) + cell / 2), str(layer), anchor="rm", font=font,
                  fill=SLIDING if kind == "sliding" else "black")
    if selected is not None and 0 <= selected[0] < layers and 0 <= selected[1] < heads:
        x, y = left + selected[1] * (cell + gap), top + selected[0] * (cell + gap)
        draw.rectangle((x - 2, y - 2, x + cell + 1, y + cell + 1), outline=SELECTED, width=2)
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# ---------------------------------------------------------------- Altair charts


def head_heatmap(cells: pd.DataFrame, log_scale: bool = False) -> alt.Chart:
    """One head: rows = the token attending, columns = the token attended to, tooltips with the weight.

    `cells` is core.running.attention.head_cells(...). Future cells (upper triangle) are grey.
    """
    order = list(dict.fromkeys(cells.sort_values("query_pos")["query"]))
    n = len(order)
    scale = (alt.Scale(type="log", domain=[LOG_FLOOR, 1], clamp=True, scheme="viridis") if log_scale
             else alt.Scale(domain=[0, max(float(cells["weight"].max()), 1e-6)], scheme="viridis"))
    data = cells.assign(weight=cells["weight"].clip(lower=LOG_FLOOR) if log_scale else cells["weight"],
                        shown=cells["weight"])
    tooltip = [alt.Tooltip("query:N", title="Token looking"), alt.Tooltip("key:N", title="Looks at"),
               alt.Tooltip("shown:Q", title="Weight", format=".3f")]
    if "weight_before_renormalising" in cells:
        tooltip.append(alt.Tooltip("weight_before_renormalising:Q", title="Weight incl. first token", format=".3f"))
    row_px = 24 if n <= 16 else 16
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("key:N", sort=order, title="looks at (attended token)",
                axis=alt.Axis(labelAngle=-90, labelLimit=100, labelOverlap=False, labelFontSize=11)),
        y=alt.Y("query:N", sort=order, title="token looking (attending)",
                axis=alt.Axis(labelLimit=100, labelOverlap=False, labelFontSize=11)),
        color=alt.condition("datum.future", alt.value("#e1e1e1"),
                            alt.Color("weight:Q", scale=scale, title="weight")),
        tooltip=tooltip,
    ).properties(height=n * row_px + 130)  # Streamlit fits axes and labels inside the height


def summary_heatmap(table: pd.DataFrame, metric: str, title: str, selection: str = "pick") -> alt.LayerChart:
    """Layers (rows) × heads (columns) of one summary; a strip on the left marks sliding-window layers,
    white lines separate query heads sharing a KV head; clicking a cell selects that head."""
    heads = int(table["head"].max()) + 1
    layers = int(table["layer"].max()) + 1
    data = table.assign(x0=table["head"] - 0.5, x1=table["head"] + 0.5,
                        y0=table["layer"] - 0.5, y1=table["layer"] + 0.5)
    x_scale = alt.Scale(domain=[-1.6, heads - 0.5], nice=False, zero=False)
    y_scale = alt.Scale(domain=[-0.5, layers - 0.5], reverse=True, nice=False, zero=False)
    pick = alt.selection_point(name=selection, fields=["layer", "head"], on="click", clear="dblclick")
    x_axis = alt.Axis(values=list(range(heads)), format="d", labelOverlap=False,
                      title="head (grey lines: groups sharing a KV head)")
    y_axis = alt.Axis(values=list(range(layers)), format="d", title="layer", labelOverlap=False)
    base = alt.Chart(data)
    cells = base.mark_rect(stroke="white", strokeWidth=0.3).encode(
        x=alt.X("x0:Q", scale=x_scale, axis=x_axis), x2="x1", y=alt.Y("y0:Q", scale=y_scale, axis=y_axis), y2="y1",
        color=alt.Color(f"{metric}:Q", scale=alt.Scale(scheme="viridis"), title=title.split("(")[0][:28]),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.35)),
        tooltip=[alt.Tooltip("layer:Q"), alt.Tooltip("head:Q"), alt.Tooltip("kv_head:Q", title="KV head"),
                 alt.Tooltip("layer_kind:N", title="layer kind"), alt.Tooltip(f"{metric}:Q", title=title, format=".3f")],
    ).add_params(pick)
    kinds = data.drop_duplicates("layer").assign(sx0=-1.5, sx1=-0.75)
    strip = alt.Chart(kinds).mark_rect().encode(
        x=alt.X("sx0:Q", scale=x_scale, axis=x_axis), x2="sx1", y=alt.Y("y0:Q", scale=y_scale, axis=y_axis), y2="y1",
        color=alt.Color("layer_kind:N", scale=alt.Scale(domain=["global", "sliding"], range=["#bbbbbb", "#d95f02"]),
                        legend=alt.Legend(title="layer kind", orient="bottom")),
        tooltip=[alt.Tooltip("layer:Q"), alt.Tooltip("layer_kind:N", title="layer kind")],
    )
    group_edges = data.drop_duplicates("head").sort_values("head")
    group_edges = group_edges[group_edges["kv_head"].diff().fillna(0) != 0].assign(
        ya=-0.5, yb=layers - 0.5, x=lambda d: d["head"] - 0.5)
    rules = alt.Chart(group_edges).mark_rule(color="#888888", strokeWidth=2).encode(
        x=alt.X("x:Q", scale=x_scale), y=alt.Y("ya:Q", scale=y_scale), y2="yb")
    height = layers * 16 + 110  # Streamlit fits axes and legends inside the height
    return alt.layer(cells, strip, rules).resolve_scale(color="independent").properties(height=height,
                                                                                        width="container")


def faceted_grid(maps: np.ndarray) -> alt.Chart:
    """The slow reference: the same grid as one faceted Altair chart (one rectangle per weight)."""
    layers, heads, n, _ = maps.shape
    layer, head, query, key = np.indices(maps.shape).reshape(4, -1)
    keep = key <= query
    data = pd.DataFrame({"layer": layer[keep], "head": head[keep], "query": query[keep], "key": key[keep],
                         "weight": maps.reshape(-1)[keep].astype(np.float32)})
    return alt.Chart(data).mark_rect().encode(
        x=alt.X("key:O", axis=None), y=alt.Y("query:O", axis=None),
        color=alt.Color("weight:Q", scale=alt.Scale(scheme="viridis"), legend=None),
        tooltip=["layer", "head", "query", "key", "weight"],
    ).properties(width=max(n * 2, 20), height=max(n * 2, 20)).facet(
        row=alt.Row("layer:O"), column=alt.Column("head:O"), spacing=2)
