"""What the Attention page reads of each layer's weights, in torch only: shared by the local path and NDIF.

Why torch only, in a module of its own: a remote model's attention page is reduced inside its
nnsight trace, where the model runs (core.remote.attention ships this module by value with each
request, nnsight.register; the server has no `core`). The local path runs the same functions
(core.running.attention.head_summaries, core.running.attention_page), so there is one description
of the summaries and of the grid, not a second copy written for nnsight.

Every value is computed from the weights as core.running.trace stores them (rounded to float16,
then float32): a remote page shows the numbers the local page shows for the same model.
- layer_summaries: the four head summaries of core.running.attention.SUMMARY_METRICS, per head;
- grid_tiles: one head's square as the grid image draws it (dashboard/charts/attention.grid_image):
  token 0 optionally hidden (rows renormalised), the causal upper triangle NaN, max-pooled to at
  most `size` cells a side (a NaN block only when all of it is in the future), so a 405B grid at 64
  tokens is (126, 128, 16, 16) float32 instead of (126, 128, 64, 64);
- attention_request: everything one page render asks for, from the model's output attentions.
"""

from __future__ import annotations

import math

import torch

METRICS = ("first_token_mass", "entropy_bits", "previous_token", "mean_distance")  # SUMMARY_METRICS' order


def stored(weights: torch.Tensor) -> torch.Tensor:
    """float32 copy of the weights as a Trace keeps them (float16), so both paths read the same numbers."""
    return weights.to(torch.float16).float()


def layer_summaries(a: torch.Tensor) -> torch.Tensor:
    """The four summaries of every head of one layer, averaged over query rows 1..T-1: (4, heads) float32.

    a: (heads, T, T) float32 weights of one layer.
    """
    heads, T, _ = a.shape
    if T < 2:
        return torch.zeros(len(METRICS), heads, dtype=torch.float32, device=a.device)
    q = a[:, 1:, :]  # (heads, T-1, T), query rows 1..T-1
    rows = torch.arange(T - 1).to(a.device)  # row r is token r + 1; its previous token is r
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0)[1:].to(a.device, a.dtype)  # (T-1, T)
    entropy = -torch.special.xlogy(q, q).sum(dim=-1) / math.log(2)  # (heads, T-1) bits; 0 log 0 = 0
    return torch.stack([q[:, :, 0].mean(dim=1),
                        entropy.mean(dim=1),
                        q[:, rows, rows].mean(dim=1),
                        torch.einsum("hrj,rj->hr", q, distance).mean(dim=1)])  # (4, heads)


def hide_first(a: torch.Tensor) -> torch.Tensor:
    """Token 0 dropped (row and column) and each row renormalised; a row whose weight was all on it is zeros.

    a: (..., T, T) -> (..., T-1, T-1), as core.running.attention.hide_first_token does in NumPy.
    """
    rest = a[..., 1:, 1:]
    total = rest.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, rest / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(rest))


def pooled_size(tokens: int, size: int) -> int:
    """Cells a side of a grid tile for `tokens` tokens drawn `size` pixels wide (no pooling below that)."""
    return min(int(tokens), int(size))


def grid_tiles(a: torch.Tensor, hide: bool, size: int) -> torch.Tensor:
    """Every head of one layer as the grid draws it: (heads, T, T) -> (heads, s, s) float32, NaN = future.

    s = pooled_size(n, size) with n = T (T - 1 when `hide`): block i covers rows and columns
    [i*n//s, (i+1)*n//s), as NumPy's reduceat in the chart cuts them, and holds their max.
    """
    m = hide_first(a) if hide else a
    n = m.shape[-1]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1).to(m.device)  # (n, n)
    s = pooled_size(n, size)
    if s >= n:
        return m.masked_fill(future, float("nan"))
    starts = torch.arange(s) * n // s  # (s,) first token of each block
    block = (torch.searchsorted(starts, torch.arange(n), right=True) - 1).to(m.device)  # (n,) block of each token
    m = m.masked_fill(future, float("-inf"))  # -inf: max-pooling keeps any present weight, as np.fmax does
    heads = m.shape[0]
    cols = torch.full((heads, n, s), float("-inf"), dtype=m.dtype, device=m.device)
    cols = cols.scatter_reduce(2, block.expand(heads, n, n), m, reduce="amax")  # (heads, n, s)
    out = torch.full((heads, s, s), float("-inf"), dtype=m.dtype, device=m.device)
    out = out.scatter_reduce(1, block[None, :, None].expand(heads, n, s), cols, reduce="amax")  # (heads, s, s)
    return out.masked_fill(torch.isinf(out), float("nan"))


def attention_request(weights, *, summaries: bool = False, grid: dict | None = None,
                      head: tuple[int, int] | None = None, full: bool = False) -> dict[str, torch.Tensor]:
    """What one render of the Attention page (or attention_weights) brings back, from the model's attentions.

    weights: the model's output attentions, L tensors (1, heads, T, T) (None or empty: not exposed).
    summaries: {"summaries": (L, 4, heads) float32}; grid {"hide": bool, "size": int}: {"grid":
    (L, heads, s, s) float32}; head (layer, head): {"head": (T, T) float16}; full: {"full": (L, heads,
    T, T) float16}. Weights that are not exposed: {"missing": (1,)}.
    """
    if not weights or any(w is None for w in weights):
        return {"missing": torch.ones(1)}
    out: dict[str, torch.Tensor] = {}
    kept, tiles = [], []
    for w in weights:  # one layer at a time: bounded memory at 512 tokens
        a = stored(w[0])  # (heads, T, T)
        if summaries:
            kept.append(layer_summaries(a))
        if grid is not None:
            tiles.append(grid_tiles(a, bool(grid["hide"]), int(grid["size"])))
    if summaries:
        out["summaries"] = torch.stack(kept)  # (L, 4, heads)
    if grid is not None:
        out["grid"] = torch.stack(tiles)  # (L, heads, s, s)
    if head is not None:
        out["head"] = weights[head[0]][0, head[1]].to(torch.float16).clone()  # (T, T)
    if full:
        out["full"] = torch.stack([w[0].to(torch.float16) for w in weights])  # (L, heads, T, T)
    return out
