"""The reductions that run where the model is: torch-only, so they can be shipped inside NDIF traces.

Why here and torch-only: a function called inside a remote trace is shipped to the server by value
(`nnsight.register(this module)`), so it may use torch and nothing of ours that is not shipped with
it. They take modules or nnsight envoys alike (inside a trace, `head(x)` applies the server's head).
Today only the remote lens calls them; core.running.lens still decodes with its own blockwise head,
and tests/test_remote.py checks that the two agree (issue 18 asks for one shared description).

Layer convention (core/model/parts.py): rows are hidden_states[l] for l = 0..L; the last
`normed_rows` of them already have the final norm (hidden_states[L] in Hugging Face's convention)
and get only OPT's project_out.
"""

from __future__ import annotations

import torch


def first(output):
    """A block's output as a tensor: its first element when the block returns a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def adjust_logits(logits: torch.Tensor, multiplier: float | None = None, softcap: float | None = None) -> torch.Tensor:
    """What the model does to its head's output: Granite/Cohere's factor, then Gemma's soft-cap."""
    if multiplier is not None:
        logits = logits * multiplier
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def finish_rows(rows: torch.Tensor, normed_rows: int, norm=None, project_out=None) -> torch.Tensor:
    """Hidden rows (R, H) -> the head's input (R, H'): final norm on all but the last `normed_rows`, then project_out."""
    count = rows.shape[0] - normed_rows
    if norm is not None and count > 0:
        rows = torch.cat([norm(rows[:count]), rows[count:]]) if normed_rows else norm(rows)
    if project_out is not None:
        rows = project_out(rows)
    return rows


def top_k_probs(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids (R, k) int64, probabilities (R, k) float32) of the k largest logits (R, V) per row."""
    logits = logits.float()
    top, ids = torch.topk(logits, min(int(k), logits.shape[-1]), dim=-1)  # (R, k)
    return ids, torch.exp(top - torch.logsumexp(logits, dim=-1, keepdim=True))  # softmax at the top k only


def lens_top_k(rows: torch.Tensor, normed_rows: int, norm, project_out, head, multiplier: float | None,
               softcap: float | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit lens of hidden rows (R, H): top-k ids (R, k) and probabilities (R, k).

    `norm`, `project_out`, `head`: the model's final norm (or None), OPT's project_out (or None) and
    LM head, as modules or nnsight envoys. Only (R, k) ids and probabilities leave the function.
    """
    x = finish_rows(rows, normed_rows, norm, project_out)
    logits = adjust_logits(head(x.to(head.weight.dtype)).float(), multiplier, softcap)  # (R, V)
    return top_k_probs(logits, k)
