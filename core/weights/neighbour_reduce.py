"""The embedding neighbours' search, torch only: run by core.weights.embeddings here and on NDIF.

Why torch only and a module of its own: "the search runs where the table is" (issue 18). A remote
model's cosine top-k against its embedding table is computed inside an nnsight session, where
the table lives (core.remote.embeddings), and a function called there is shipped to the server by
value (`nnsight.register(this module)`), so it may use torch and nothing else of ours. The local
path calls the same functions on the local table: one description of the search, the same numbers.
Only the k ids and cosines come back.
"""

from __future__ import annotations

import torch

# > 2 x the worst cosine error of a bf16 pass: matvec output and row norm each 2^-8 relative, + input rounding
RESCORE_MARGIN = 0.02
MAX_RESCORE_ROWS = 16_384  # cap on rows rescored in fp32 (only reached by a near-constant table)


@torch.no_grad()
def compute_inverse_norms(table: torch.Tensor) -> torch.Tensor:
    """1 / |E[i]| for every row, fp32 (V,): one pass over the table in its own dtype.

    Inverse so that a query costs one multiply per token instead of a divide; an all-zero
    row (an unused slot) gets 0, i.e. cosine 0 instead of NaN. torch accumulates a bf16/fp16
    norm in fp32 and rounds only the result (relative error <= 2^-8): about one bandwidth pass
    (0.085 s for 128,256 x 3,072 bf16 here), where upcasting row chunks to fp32 first took 2x-20x
    that. Ranking tolerates the rounding (RESCORE_MARGIN); the reported cosines are recomputed
    exactly in top_cosine_rows.
    """
    norms = torch.linalg.vector_norm(table, dim=1).float()  # (V,) beside the table
    return torch.where(norms > 0, 1.0 / norms, 0.0)


def row_dots(table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """E[i] . q for every row (V,), in the table's dtype: fp32 accumulation, output rounded.

    A one-row F.linear, not torch.mv: torch's CPU mv for bf16/fp16 is a slower kernel (Llama-3.2-3B's
    128,256 x 3,072 bf16 table: mv 0.080 s, linear 0.043 s, a plain sum over it 0.046 s); for fp32
    tables the two are the same.
    """
    return torch.nn.functional.linear(q.to(table.dtype)[None], table)[0]


@torch.no_grad()
def top_cosine_rows(table: torch.Tensor, inverse: torch.Tensor, q: torch.Tensor, k: int,
                    exclude=()) -> tuple[list[int], list[float]]:
    """Ids and cosines of the k rows of `table` (V, H) most similar to q (H,), best first.

    `inverse` is compute_inverse_norms(table); rows in `exclude` are skipped. One pass over
    the table in its own dtype, one multiply per row, and an exact rescoring of a few rows.
    Few whole-vocabulary operations on purpose: each costs a thread hand-off on a busy CPU.
    """
    q = q.detach().to(device=table.device, dtype=torch.float32)  # the query goes to the table, never the reverse
    q = q / torch.linalg.vector_norm(q).clamp_min(1e-30)  # (H,) unit: E[i].q * inverse[i] is the cosine
    exclude = sorted(set(exclude))
    k = max(1, min(int(k), table.shape[0] - len(exclude)))
    scores = torch.mul(row_dots(table, q), inverse)  # (V,) fp32: the multiply upcasts
    if exclude:
        scores[exclude] = float("-inf")
    top = torch.topk(scores, k)
    if table.dtype in (torch.float32, torch.float64):
        return top.indices.tolist(), top.values.tolist()
    # Low-precision table: each score is within RESCORE_MARGIN/2 of the truth, so the true top k
    # all score at least (k-th score - margin). Rescore those rows exactly in fp32.
    candidates = torch.nonzero(scores >= top.values[-1] - RESCORE_MARGIN).squeeze(1)  # (C,)
    if candidates.numel() > MAX_RESCORE_ROWS or not torch.isfinite(top.values).all():
        candidates = torch.topk(scores.nan_to_num(nan=-1.0), min(MAX_RESCORE_ROWS, table.shape[0])).indices
    rows = table[candidates].float()  # (C, H): exact scores use exact fp32 norms, not the rounded ones
    norms = torch.linalg.vector_norm(rows, dim=1)
    exact = (rows @ q) * torch.where(norms > 0, 1.0 / norms, 0.0)  # (C,)
    if exclude:
        exact[torch.isin(candidates, torch.tensor(exclude, device=candidates.device))] = float("-inf")
    best = torch.topk(exact, k)
    return candidates[best.indices].tolist(), best.values.tolist()


@torch.no_grad()
def query_vector(table: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """The query's vector (H,) fp32: the token's row, or the mean of the pieces' rows of a split word."""
    return table[ids].float().mean(dim=0)  # (pieces, H) -> (H,)


@torch.no_grad()
def three_cos_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a - b + c with each term unit-normalised first (3CosAdd), so no word dominates by its norm (H,)."""
    a, b, c = (x / torch.linalg.vector_norm(x).clamp_min(1e-30) for x in (a, b, c))
    return a - b + c


@torch.no_grad()
def rank_in(table: torch.Tensor, inverse: torch.Tensor, q: torch.Tensor, token_id: int, exclude=()) -> int:
    """Where `token_id` lands when every row of `table` (V, H) is sorted by cosine to q (H,) (1 = closest)."""
    q = q.detach().to(device=table.device)  # (H,); the scale of q is irrelevant
    scores = torch.mul(row_dots(table, q), inverse)  # (V,)
    if exclude:
        scores[sorted(set(exclude))] = float("-inf")
    return int((scores > scores[token_id]).sum()) + 1


@torch.no_grad()
def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The words' coordinates on the 2 principal components of their vectors (n, H), and each axis's share of
    the variance, in float64: (n, 2) and (2,).

    PCA through the Gram matrix of the centred vectors C: C C^T = U S^2 U^T (n x n, n <= 60 words), so the
    coordinates C V = U S need one n x n eigendecomposition instead of an SVD of the n x H matrix (H = 16,384
    for Llama-3.1-405B): the same numbers to ~1e-12, and 0.6 ms instead of 9 ms at 12 x 16,384 on one CPU
    core (NumPy's SVD: 20-40 ms there). Each component's sign is fixed so that its largest loading
    (of V = C^T U / S) is positive (scikit-learn's svd_flip), so the local and the remote map face the same way.
    """
    centred = vectors.double() - vectors.double().mean(dim=0)  # (n, H)
    values, bases = torch.linalg.eigh(centred @ centred.T)  # (n,) ascending, (n, n)
    values = values.clamp_min(0.0)  # rounding can leave the null directions slightly negative
    top = bases[:, [-1, -2]]  # (n, 2): the two largest
    loadings = centred.T @ top  # (H, 2): V times S, the same signs
    signs = torch.sign(loadings.gather(0, loadings.abs().argmax(dim=0, keepdim=True)))[0]  # (2,)
    signs = torch.where(signs == 0, 1.0, signs)
    total = values.sum()
    explained = torch.where(total > 0, values[[-1, -2]] / total.clamp_min(1e-300), 0.0)  # (2,)
    return top * (values[[-1, -2]].sqrt() * signs), explained  # (n, 2), (2,)
