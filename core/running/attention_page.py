"""What one render of the Attention page reads of a model: summaries, the grid, one head, as ONE request.

Why a function of its own: a remote model (core.remote) pays one queue wait per NDIF job and may
bring back only what the page draws (issue 18), so the page asks for exactly that: the head
summaries, the grid's pooled tiles and the picked head's weights, each optional (a part already
shown is not asked again). A remote model runs them in one job (core.remote.attention); a local
model reads them from its Trace with the same torch code (core.running.attention_reduce), so both
give the same numbers. attention_weights(lm, prompt) of a remote model brings back every head only
when that fits the budget (remote_attention_weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.model.loaded import LoadedModel
from core.running import attention_reduce as shared
from core.running.attention import SUMMARY_METRICS, head_summaries, normalised, require_attention
from core.running.lens_page import PromptTokens, prompt_tokens, tokens_of
from core.running.trace import Trace, run_trace


@dataclass(frozen=True, eq=False)
class AttentionPage:
    """The parts of the Attention page asked for (None: not asked)."""

    tokens: PromptTokens
    summaries: dict[str, np.ndarray] | None = None  # SUMMARY_METRICS -> (layers, heads) float64
    grid: np.ndarray | None = None  # (layers, heads, s, s) float32, NaN = future; token 0 hidden if asked
    head: np.ndarray | None = None  # (T, T) float16, the picked head as a Trace stores it


def _is_remote(lm: LoadedModel) -> bool:
    """A core.remote model: its forward passes run where lm.remote says."""
    return getattr(lm, "remote", None) is not None


def _summaries(values: np.ndarray) -> dict[str, np.ndarray]:
    """attention_request's (L, 4, heads) as head_summaries' dict of (L, heads) float64."""
    return {name: values[:, i].astype(np.float64) for i, name in enumerate(SUMMARY_METRICS)}


def checked_head(lm: LoadedModel, head: tuple[int, int] | None) -> tuple[int, int] | None:
    """(layer, head) as ints, or a ValueError naming this model's ranges (before any job is sent)."""
    if head is None:
        return None
    layer, h = int(head[0]), int(head[1])
    if not (0 <= layer < lm.num_layers and 0 <= h < lm.num_heads):
        raise ValueError(f"{lm.name} has layers 0..{lm.num_layers - 1} and heads 0..{lm.num_heads - 1}: "
                         f"there is no layer {layer}, head {h}.")
    return layer, h


def attention_page(lm: LoadedModel, prompt: str | Trace, *, summaries: bool = False, grid: dict | None = None,
                   head: tuple[int, int] | None = None) -> AttentionPage:
    """The asked parts for `prompt` (text, or a local model's Trace): one job for a remote model.

    grid: {"hide": hide the first token, "size": cells a side at most (the tile's pixels)}.
    Raises UnsupportedArchitecture (no attention weights), ValueError, or RemoteError.
    """
    require_attention(lm)
    head = checked_head(lm, head)
    if _is_remote(lm):
        from core.remote.attention import attention_job

        tokens = tokens_of(prompt) if isinstance(prompt, Trace) else prompt_tokens(lm, prompt)
        values = attention_job(lm, [int(i) for i in tokens.token_ids], summaries=summaries, grid=grid, head=head)
        _require(lm, values)
        return AttentionPage(tokens, _summaries(values["summaries"]) if summaries else None, values.get("grid"),
                             values.get("head"))
    trace = prompt if isinstance(prompt, Trace) else run_trace(lm, prompt)
    require_attention(lm, trace)
    tiles = None
    if grid is not None:
        tiles = np.stack([shared.grid_tiles(torch.from_numpy(layer.astype(np.float32)), bool(grid["hide"]),
                                            int(grid["size"])).numpy() for layer in trace.attentions])
    return AttentionPage(tokens_of(trace), head_summaries(trace.attentions) if summaries else None, tiles,
                         None if head is None else trace.attentions[head[0], head[1]])


def _require(lm: LoadedModel, values: dict) -> None:
    """A plain UnsupportedArchitecture when the remote model returned no attention weights."""
    if "missing" in values:
        from core.model.errors import UnsupportedArchitecture

        raise UnsupportedArchitecture(
            f"{lm.name} returned no attention weights where it runs: that deployment's attention "
            "implementation does not expose them (only eager attention does). Every other page works.")


def remote_attention_weights(lm: LoadedModel, prompt: str) -> tuple[list[str], np.ndarray]:
    """attention_weights of a remote model: every head's weights in one job, only when under the budget.

    Over it (e.g. Llama-3.1-405B at 64 tokens: 132 MB) RemoteResultTooLarge is raised before any job
    is sent, saying to ask attention_page for the summaries, the grid or one head instead.
    """
    from core.remote.attention import attention_job, check_full

    tokens = prompt_tokens(lm, prompt)
    check_full(lm, len(tokens.token_ids))
    values = attention_job(lm, [int(i) for i in tokens.token_ids], full=True)
    _require(lm, values)
    return list(tokens.tokens), normalised(values["full"])


def page_bytes(lm: LoadedModel, tokens: int, size: int, *, head: bool = True) -> int:
    """Bytes one render brings back (summaries, grid pooled to `size`, one head) for `lm` (may be on meta):
    attention_request run on meta tensors of the model's attention shapes, measured on zeros."""
    from core.remote.jobs import result_bytes

    weights = [torch.empty(1, lm.num_heads, int(tokens), int(tokens), device="meta") for _ in range(lm.num_layers)]
    values = shared.attention_request(weights, summaries=True, grid={"hide": False, "size": size},
                                      head=(0, 0) if head else None)
    return result_bytes({"attention": {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in values.items()}})
