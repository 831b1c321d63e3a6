"""Hidden-state maps' reduction, torch only: item vectors -> one Gram matrix per layer, here and inside a remote trace.

Why a Gram matrix: every number the maps page draws depends only on the inner products between
the item vectors of one layer. PCA coordinates (up to the sign of each axis), the cosine
silhouette and the nearest-centroid probe on unit vectors are all unchanged by an orthogonal
change of basis, and the Gram matrix G = X X^T (N, N) fixes X up to exactly such a change
(core.running.maps rebuilds an isometric X' from eigh(G), Schölkopf et al. 1998's kernel-PCA
view of linear PCA). So a model on NDIF sends back (L+1, N, N) numbers, not (N, L+1, H).

Why torch only and a module of its own: a function called inside a remote trace is shipped to the
server by value (`nnsight.register(this module)`, core.remote.maps), so it may use torch and
nothing else of ours. The local path (core.running.maps) calls the same functions on its
Trace's arrays: one description of the analysis (issue 18).

Conventions: states (L+1, T, H) are hidden_states[0..L] of one sentence (core.running.trace),
float32; `positions` are the token positions covering the item's word (core.running.maps.item_positions).
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "last")  # a word cut into pieces: mean of its pieces, or its last piece


def pool(states: torch.Tensor, positions: list[int], pooling: str) -> torch.Tensor:
    """The item's vector at every entry (L+1, H): the mean of its pieces, or its last piece alone.

    In a causal model the last piece is the first position that has read the whole word.
    """
    chosen = list(positions) if pooling == "mean" else list(positions)[-1:]
    return states[:, chosen].mean(dim=1)  # (L+1, H)


def gram(vectors: torch.Tensor) -> torch.Tensor:
    """Inner products of the item vectors at every entry, in float64: (N, L+1, H) -> (L+1, N, N).

    float64 because the analysis centres the points from G alone (J G J): in float32 the
    cancellation would lose the small differences between large vectors (a shared direction of a
    few hundred dominates real hidden states); the product of two float32 values is exact in float64.
    """
    x = vectors.double().transpose(0, 1)  # (L+1, N, H)
    return x @ x.transpose(1, 2)  # (L+1, N, N)
