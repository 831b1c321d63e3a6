"""Contextual similarity's arithmetic, torch only: run by core.running.context here and inside a remote trace.

Why torch only and a module of its own: a remote model (core.remote.context) reduces the hidden
states where it runs (NDIF's GPUs), and a function called inside a remote trace is shipped to the
server by value (`nnsight.register(this module)`), so it may use torch and nothing else of ours.
The local path calls the same functions on its Trace's arrays: one description of the analysis
(issue 18), so the local and remote numbers are the same computation.

Conventions: states (L+1, T, H) are hidden_states[0..L] of one sentence (core.running.trace),
float32; `positions` are a word's token positions in that sentence (core.running.context.find_word).
"""

from __future__ import annotations

import torch


def word_mean(states: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """The word's vector at every entry: the mean of its pieces."""
    return states[:, positions].mean(dim=1)  # (L+1, H)


def unit(x: torch.Tensor) -> torch.Tensor:
    """x scaled to length 1 along its last axis (a zero vector stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def similarity_reduce(words: torch.Tensor, tokens: list[torch.Tensor], center: bool) -> dict[str, torch.Tensor]:
    """Cosines of the word's vectors between sentences, and the two baselines, at every entry.

    words: (S, L+1, H) the word's vector in each sentence; tokens: S tensors (L+1, T_s, H), the
    tokens each sentence's baselines average over (BOS already left out where asked). center:
    subtract, at each entry, the mean vector of all those tokens before every cosine.
    Returns cosine (S, S, L+1), baseline (L+1,) (mean cosine over every cross-sentence token pair)
    and pair_baseline (S, S, L+1) (mean cosine over sentence i's tokens x sentence j's tokens).
    """
    if center:
        mean = torch.cat(tokens, dim=1).mean(dim=1)  # (L+1, H)
        words = words - mean[None]
        tokens = [x - mean[:, None] for x in tokens]
    words, tokens = unit(words), [unit(x) for x in tokens]
    sums = torch.stack([x.sum(dim=1) for x in tokens])  # (S, L+1, H): sum of unit vectors per sentence
    counts = torch.tensor([x.shape[1] for x in tokens], dtype=sums.dtype, device=sums.device)  # (S,)
    total = sums.sum(dim=0)  # (L+1, H)
    # sum over i != j of <sum_i, sum_j> = |total|^2 - sum_i |sum_i|^2
    cross = (total**2).sum(-1) - (sums**2).sum(-1).sum(0)  # (L+1,)
    pairs = counts.sum() ** 2 - (counts**2).sum()
    pair_baseline = torch.einsum("ilh,jlh->ijl", sums, sums) / torch.outer(counts, counts)[..., None]  # (S, S, L+1)
    cosine = torch.einsum("ilh,jlh->ijl", words, words)  # (S, S, L+1)
    return {"cosine": cosine, "baseline": cross / pairs, "pair_baseline": pair_baseline}


def prompt_reduce(states: torch.Tensor, position: int | None) -> dict[str, torch.Tensor]:
    """What the hidden-states page shows of one prompt: every token's vector length at every entry, and
    one token's whole vector at every entry (states: (L+1, T, H); position None: no token picked)."""
    out = {"norms": states.norm(dim=-1)}  # (L+1, T)
    if position is not None:
        out["column"] = states[:, position].clone()  # (L+1, H); a view would send the whole (L+1, T, H) storage
    return out
