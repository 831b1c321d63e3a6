"""Attention weights of every head, and a few numbers that summarise each head.

Attention weights are the softmax of scaled query·key scores (Vaswani et al.
2017): weights[l, h, i, j] is how much token i (the row, the token that is
"looking") takes from token j (the column) in layer l, head h. Each row sums
to 1 and a token never looks at later tokens (causal mask), so the upper
triangle j > i is zero. They are read from the frozen `Trace` (the model's
own eager attention, stored in half precision); no second forward pass.

Head summaries (one number per layer × head; averaged over the query rows
1..T-1, because row 0 has a single token to look at and says nothing):
- first-token mass: weight on token 0, the "attention sink" (Xiao et al. 2023,
  "Efficient Streaming Language Models with Attention Sinks"): softmax must
  put its weight somewhere, and heads with nothing to do park it on token 0.
- entropy (bits): -sum_j a_ij log2 a_ij; 0 = looks at one token, high = spread.
- previous-token score: weight on token i-1 (previous-token heads, as in
  Olsson et al. 2022, "In-context Learning and Induction Heads").
- mean distance: sum_j a_ij (i - j), how many tokens back the head looks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.model.errors import UnsupportedArchitecture
from core.running import attention_reduce as shared
from core.running.trace import Trace, run_trace

SUMMARY_METRICS = {  # column -> plain description, shown in the dashboard
    "first_token_mass": "Weight on the first token (the attention sink)",
    "entropy_bits": "Spread of the attention (entropy, bits)",
    "previous_token": "Weight on the previous token",
    "mean_distance": "Mean distance looked back (tokens)",
}


def require_attention(lm: LoadedModel, trace: Trace | None = None) -> None:
    """Raise UnsupportedArchitecture (a plain message) when there are no attention weights to show:
    the model has no attention layers, or (given a trace) its forward pass returned no weights."""
    if not lm.num_heads:
        raise UnsupportedArchitecture(
            f"{lm.name} ({type(lm.model).__name__}) has no attention heads: its layers mix tokens another way "
            "(e.g. a state-space model), so there are no attention weights to show. Every other page works.")
    if trace is not None and trace.attentions is None:
        raise UnsupportedArchitecture(
            f"{lm.name} ({type(lm.model).__name__}) returned no attention weights: its attention "
            "implementation does not expose them (only eager attention does). Every other page works.")


def attention_weights(lm: LoadedModel, prompt: str) -> tuple[list[str], np.ndarray]:
    """Token strings and the attention weights (layers, heads, T, T), rows summing to 1, causal.

    A remote model (core.remote) brings every head back in one job only when that fits the page budget;
    otherwise RemoteResultTooLarge says to ask core.running.attention_page.attention_page for less.
    """
    require_attention(lm)
    if getattr(lm, "remote", None) is not None:
        from core.running.attention_page import remote_attention_weights

        return remote_attention_weights(lm, prompt)
    trace = run_trace(lm, prompt)
    require_attention(lm, trace)
    return list(trace.tokens), normalised(trace.attentions)


def normalised(attentions: np.ndarray) -> np.ndarray:
    """float32 copy with each row summing to exactly 1 (undoes half-precision rounding)."""
    weights = attentions.astype(np.float32)  # (L, heads, T, T)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


def hide_first_token(weights: np.ndarray) -> np.ndarray:
    """Drop token 0 (row and column) and renormalise each row over the remaining tokens.

    Shows where a head looks *apart from* the sink. Works on (..., T, T); the
    result is (..., T-1, T-1). A row whose only weight was on token 0 becomes zeros.
    """
    rest = weights[..., 1:, 1:].astype(np.float32)  # (..., T-1, T-1)
    total = rest.sum(axis=-1, keepdims=True)
    return np.divide(rest, total, out=np.zeros_like(rest), where=total > 0)


def head_summaries(attentions: np.ndarray) -> dict[str, np.ndarray]:
    """The four summaries of SUMMARY_METRICS, each a (layers, heads) array."""
    layers, heads = attentions.shape[:2]
    out = {name: np.zeros((layers, heads), dtype=np.float64) for name in SUMMARY_METRICS}
    for layer in range(layers):  # one layer at a time: bounded memory at 512 tokens
        values = shared.layer_summaries(torch.from_numpy(attentions[layer].astype(np.float32))).numpy()  # (4, heads)
        for i, name in enumerate(shared.METRICS):
            out[name][layer] = values[i]
    return out


def layer_kinds(lm: LoadedModel) -> list[str]:
    """'sliding' (local window) or 'global' for each layer (Gemma 3: 5 local : 1 global; core/model/parts.py)."""
    return list(lm.parts.layout.layer_kinds)


def kv_head_of(lm: LoadedModel) -> np.ndarray:
    """KV head used by each query head under grouped-query attention (Ainslie et al. 2023).

    Hugging Face's repeat_kv repeats each KV head for `heads // kv_heads`
    consecutive query heads, so query head h reads KV head h // group.
    """
    group = lm.num_heads // lm.num_kv_heads
    return np.arange(lm.num_heads) // group  # (heads,)


def summary_table(lm: LoadedModel, trace: Trace) -> pd.DataFrame:
    """One row per (layer, head): its KV head, layer kind, and the four summaries."""
    require_attention(lm, trace)
    return summaries_table(lm, head_summaries(trace.attentions))


def summaries_table(lm: LoadedModel, summaries: dict[str, np.ndarray]) -> pd.DataFrame:
    """summary_table's rows from head_summaries' dict (each (layers, heads)), however they were computed."""
    layers, heads = next(iter(summaries.values())).shape
    kinds, kv = layer_kinds(lm), kv_head_of(lm)
    table = pd.DataFrame({
        "layer": np.repeat(np.arange(layers), heads),
        "head": np.tile(np.arange(heads), layers),
        "kv_head": np.tile(kv, layers),
        "layer_kind": np.repeat(kinds, heads),
    })
    for name, values in summaries.items():
        table[name] = values.reshape(-1).round(4)
    return table


def head_matrix(tokens: list[str] | tuple[str, ...], weights: np.ndarray, first: int = 0) -> pd.DataFrame:
    """One head as a table: a row per attending token, a column per attended token.

    `weights` is (T, T); `first` is the position of its first token (1 after hiding token 0).
    """
    labels = [f"{first + i}: {text}" for i, text in enumerate(tokens)]
    table = pd.DataFrame(np.asarray(weights, dtype=np.float32).round(4), columns=labels)
    table.insert(0, "token", labels)
    return table


def head_cells(tokens, weights: np.ndarray, first: int = 0, raw: np.ndarray | None = None) -> pd.DataFrame:
    """One head as long-format cells (what a heatmap draws), upper triangle included and flagged.

    `weights` is (n, n) for the tokens at positions first..first+n-1; `raw`, if
    given, is the weight before renormalising (shown in tooltips).
    """
    n = len(tokens)
    labels = [f"{first + i}: {text}" for i, text in enumerate(tokens)]
    query, key = np.divmod(np.arange(n * n), n)  # row-major: (query, key) pairs
    weights = np.asarray(weights, dtype=np.float32).reshape(-1)
    cells = pd.DataFrame({
        "query_pos": first + query,
        "key_pos": first + key,
        "query": np.asarray(labels, dtype=object)[query],
        "key": np.asarray(labels, dtype=object)[key],
        "weight": weights.round(4),
        "future": key > query,  # causal mask: a token cannot look at later tokens
    })
    if raw is not None:
        cells["weight_before_renormalising"] = np.asarray(raw, dtype=np.float32).reshape(-1).round(4)
    return cells


def head_view(attentions: np.ndarray, tokens, layer: int, head: int, hide_first: bool = False,
              start: int = 0, size: int | None = None) -> pd.DataFrame:
    """Cells of one head for a heatmap: optionally without token 0 (renormalised), cut to a square
    window of `size` tokens from position `start` (long prompts are too many cells to draw)."""
    weights = normalised(attentions[layer, head])  # (T, T)
    raw, first = None, 0
    if hide_first:
        raw, weights, first = weights[1:, 1:], hide_first_token(weights), 1
    n = weights.shape[0]
    lo = int(np.clip(start - first, 0, max(n - 1, 0)))
    hi = n if size is None else min(n, lo + size)
    window = slice(lo, hi)
    return head_cells(list(tokens)[first + lo:first + hi], weights[window, window], first=first + lo,
                      raw=None if raw is None else raw[window, window])


def head_csv_table(attentions: np.ndarray, tokens, layer: int, head: int, hide_first: bool = False) -> pd.DataFrame:
    """The whole head as a matrix table (rows attend to columns), for download."""
    weights = normalised(attentions[layer, head])  # (T, T)
    if hide_first:
        return head_matrix(list(tokens)[1:], hide_first_token(weights), first=1)
    return head_matrix(list(tokens), weights)
