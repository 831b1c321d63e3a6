"""Steering's arithmetic, torch only: run by core.intervene.steering here and inside a remote trace.

Turner et al. 2023 (Activation Addition), Arditi et al. 2024 (a refusal direction): the direction
at layer l is the mean of hidden_states[l] at the last token of list 1 minus that of list 2;
"try every layer" adds strength × direction at one layer per batch row and reads how the next
token moved (log-odds of two word lists, and KL).

Why torch only and a module of its own: a remote model (core.remote.steering) computes the
directions and the sweep's scores where it runs (NDIF's GPUs), and a function called inside a
remote trace is shipped to the server by value (`nnsight.register(this module)`), so it may use
torch and nothing else of ours. The local path calls the same functions: one description of the
analysis (issue 18), so both paths compute the same numbers.
"""

from __future__ import annotations

import torch


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over the first axis of `positive` minus that of `negative`, in float64, as float32.

    positive: (P, L, H) last-token states of list 1; negative: (N, L, H) of list 2 -> (L, H).
    """
    return (positive.double().mean(dim=0) - negative.double().mean(dim=0)).float()


def add_rows(hidden: torch.Tensor, deltas: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """hidden with deltas[i] added to batch row rows[i] at every position (a copy; the rest untouched).

    hidden: (batch, T, H); deltas: (len(rows), H), moved to hidden's device and dtype.
    """
    hidden = hidden.clone()
    hidden[rows] += deltas.to(device=hidden.device, dtype=hidden.dtype)[:, None, :]
    return hidden


def log_odds(log_probs: torch.Tensor, first: list[int], second: list[int]) -> torch.Tensor:
    """log P(any of `first`) - log P(any of `second`), per row: (rows, V) -> (rows,)."""
    return torch.logsumexp(log_probs[:, first], dim=-1) - torch.logsumexp(log_probs[:, second], dim=-1)


def sweep_scores(logits: torch.Tensor, first: list[int], second: list[int]) -> dict[str, torch.Tensor]:
    """One batch of the sweep: row 0 unsteered, row 1 + i steered at its layer.

    logits: (rows, V) next-token scores. Returns shift (rows - 1,) (steered minus unsteered log-odds
    of `first` vs `second`, nats), kl (rows - 1,) (KL(unsteered || steered)), top (rows - 1,) (each
    steered row's most likely id) and finite () (no score was NaN or infinite).
    """
    logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)  # (rows, V)
    odds = log_odds(log_probs, first, second)  # (rows,)
    base = log_probs[0]  # (V,)
    return {"shift": odds[1:] - odds[0], "kl": (base.exp() * (base - log_probs[1:])).sum(-1),
            "top": log_probs[1:].argmax(-1), "finite": torch.isfinite(logits).all()}
