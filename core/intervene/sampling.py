"""How a next token is chosen and read, in torch (and transformers' logits processors) only.

Why a module of its own: generation and the next-token table run either here
(core.intervene.generation) or where a remote model runs (core.remote.generation, inside an
nnsight trace on NDIF). A function called inside a remote trace is shipped to the server by value
(`nnsight.register(this module)`), so it may use torch and transformers and nothing else of ours.
Both paths build their logits processors, add a steering delta and reduce a next-token
distribution with the functions below: one description of each, so a seeded sample on the same
device draws the same tokens whichever path runs it.
"""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

TIE_MARGIN = 8  # extra rows a remote top-k brings back, so ties at the k-th place are ordered here by id


class SeededSampler(LogitsProcessor):
    """Draws the next token with its own torch.Generator and leaves only that token's score finite.

    Placed after the temperature and top-p warpers, with generate in greedy mode:
    the argmax of the returned scores is the sampled token. The generator lives on the device
    of the scores, so the same seed draws the same tokens on the same kind of device.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generator is None:  # created on the device the scores live on
            self.generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        probs = torch.softmax(scores, dim=-1)  # (batch, vocab)
        choice = torch.multinomial(probs, num_samples=1, generator=self.generator)  # (batch, 1)
        return torch.full_like(scores, -math.inf).scatter_(1, choice, 0.0)


class RequireFinite(LogitsProcessor):
    """An edit that blows the residual stream up makes the scores NaN: stop with a message, not garbage."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if torch.isnan(scores).any() or torch.isposinf(scores).any():
            raise ValueError(f"The intervention made {self.name}'s next-token scores NaN or infinite: "
                             "the strength is too large for this model.")
        return scores


def processors(name: str, temperature: float, top_p: float, seed: int, edited: bool) -> LogitsProcessorList:
    """The logits processors of one generation: greedy (none), or T, top-p and the seeded draw.

    `edited`: an intervention changes the residual stream, so NaN scores stop the generation.
    """
    chain = LogitsProcessorList()
    if edited:
        chain.append(RequireFinite(name))
    if temperature > 0:
        chain.append(TemperatureLogitsWarper(float(temperature)))
        if top_p < 1:
            chain.append(TopPLogitsWarper(float(top_p)))
        chain.append(SeededSampler(int(seed)))
    return chain


def add_delta(hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """hidden + delta at every position, delta moved to hidden's device and dtype: (batch, T, H) -> same."""
    return hidden + delta.to(device=hidden.device, dtype=hidden.dtype)


def top_next(logits: torch.Tensor, k: int, temperature: float) -> dict[str, torch.Tensor]:
    """The k (+ TIE_MARGIN) most likely ids under softmax(logits / T) in float64, and their probabilities.

    logits: (vocab,). T = 0 puts all probability on the first highest score (greedy), as
    core.intervene.generation.token_distribution does. Returns {"ids": (n,) int64, "probs": (n,) float64,
    "size": () vocab}, n = min(k + TIE_MARGIN, vocab), by probability. The caller puts them back into a
    row of zeros and picks k from it as the local table does (ties by id; zero rows chosen alike).
    """
    logits = logits.double()
    if temperature == 0:
        probs = torch.zeros_like(logits)
        probs[int(torch.argmax(logits))] = 1.0
    else:
        scaled = logits / temperature
        weights = torch.exp(scaled - scaled.max())  # the largest becomes 0: exp never overflows
        probs = weights / weights.sum()
    values, ids = torch.topk(probs, min(int(k) + TIE_MARGIN, probs.numel()))
    return {"ids": ids.cpu(), "probs": values.cpu(), "size": torch.tensor(probs.numel())}
