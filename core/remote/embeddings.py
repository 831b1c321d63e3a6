"""The embedding neighbours of a remote model: the search runs where the table is, in ONE job.

What is sent: the query's token ids (from the local tokenizer), k and the ids to leave out. In one
nnsight session, on the server's copy of the input-embedding table (V, H), the query's vector, the
inverse row norms and the cosine top-k are computed by core.weights.neighbour_reduce (torch only,
shipped by value; the local path runs the same functions). What comes back: k ids and k cosines,
about 2 kB at k = 200 for any model (Llama-3.1-405B's 128,256 x 16,384 table never moves).

The Embeddings page asks all its parts in one job (embeddings_job, core.weights.embeddings_page): the
neighbours, the arithmetic and the word map, whose PCA (neighbour_reduce.pca_2d, the local path's too)
runs there on the words' mean rows, so only n x 2 coordinates and 2 shares of variance come back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

import core.weights.neighbour_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import module_path
from core.remote.model import RemoteLoadedModel


def neighbour_bytes(k: int, rank: bool = False) -> int:
    """torch.save bytes of what a neighbours job brings back: k ids (int64), k cosines (float32), and the
    expected token's rank (one int64) when asked."""
    return page_bytes([(k, rank)], 0, 0)


def neighbours_job(lm: RemoteLoadedModel, terms: list[list[int]], k: int, *, exclude=(),
                   expected: int | None = None) -> tuple[list[int], list[float], int | None]:
    """Ids and cosines of the k tokens closest to the query, best first, and where token `expected` ranks
    (None when not asked), computed where `lm` runs over the whole table there. One term: the query is
    the mean row of its ids (nearest_tokens); three: a - b + c by 3CosAdd (arithmetic). Raises RemoteError."""
    found, _ = embeddings_job(lm, [(terms, k, exclude, expected)], label=f"nearest tokens, k={k}")
    return found[0]


def embeddings_job(lm: RemoteLoadedModel, searches: Sequence[tuple], words: Sequence[Sequence[int]] = (), *,
                   label: str = "embeddings") -> tuple[list[tuple[list[int], list[float], int | None]],
                                                       tuple[np.ndarray, list[float]] | None]:
    """Every search of `searches` and the map of `words` in ONE job where `lm` runs (the Embeddings page).

    A search is (terms, k, exclude, expected), as neighbours_job's arguments; its answer is (ids, cosines,
    rank or None). `words`: each word's token ids; with 3 or more, the map is neighbour_reduce.pca_2d of
    their mean rows, (n, 2) float64 coordinates and the 2 axes' shares of the variance. The inverse row norms
    are computed once for all searches. Raises RemoteError.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    embed = rm.nn.get(module_path(rm.nn._module, lm.parts.embed))
    job = rm.new_job(label)
    # plain values only: the session's code and what it reads travel to the server, which has no core
    asked = [([[int(i) for i in ids] for ids in terms], int(k), sorted({int(i) for i in exclude}),
              None if expected is None else int(expected)) for terms, k, exclude, expected in searches]
    mapped = [[int(i) for i in ids] for ids in words]

    def work():
        with rm.nn.session(backend=rm.backend(job)):
            table = embed.weight  # (V, H), the server's own
            inverse = shared.compute_inverse_norms(table) if asked else None  # (V,), shared by the searches
            found = []
            for terms, k, left_out, expected in asked:
                vectors = [shared.query_vector(table, ids) for ids in terms]  # each (H,)
                q = vectors[0] if len(vectors) == 1 else shared.three_cos_add(*vectors)
                ids, cosines = shared.top_cosine_rows(table, inverse, q, k, left_out)
                rank = None if expected is None else torch.tensor(shared.rank_in(table, inverse, q, expected, left_out))
                found.append((torch.tensor(ids), torch.tensor(cosines), rank))  # (k,) int64, (k,) fp32, () int64
            points = (shared.pca_2d(torch.stack([shared.query_vector(table, ids) for ids in mapped]))
                      if len(mapped) >= 3 else None)  # (n, 2), (2,) float64
            result = nnsight.save((found, points))
        return rm.measured(job, result, "embeddings")

    found, points = rm.run(job, work)
    answers = [(ids.tolist(), cosines.tolist(), None if rank is None else int(rank)) for ids, cosines, rank in found]
    return answers, None if points is None else (points[0].cpu().numpy(), points[1].tolist())


def page_bytes(searches: Sequence[tuple[int, bool]], n_words: int, hidden_size: int) -> int:
    """torch.save bytes of what embeddings_job brings back for searches of (k, rank asked) and a map of
    `n_words` words: the map's shapes are those pca_2d gives on meta tensors of (n_words, hidden_size)."""
    found = [(torch.zeros(k, dtype=torch.int64), torch.zeros(k), torch.zeros((), dtype=torch.int64) if rank else None)
             for k, rank in searches]
    points = None
    if n_words >= 3:
        shapes = shared.pca_2d(torch.empty(n_words, hidden_size, device="meta"))
        points = tuple(torch.zeros(p.shape, dtype=p.dtype) for p in shapes)  # (n, 2), (2,)
    return result_bytes({"embeddings": (found, points)})


def query_vector_job(lm: RemoteLoadedModel, ids: Sequence[int]) -> torch.Tensor:
    """The query's vector (H,) float32 — the mean of rows `ids` of the server's embedding table — in one job
    (resolve_query of a remote model: H x 4 bytes back, 65,536 for Llama-3.1-405B). Raises RemoteError."""
    nnsight = shipping(shared)
    rm = lm.remote
    embed = rm.nn.get(module_path(rm.nn._module, lm.parts.embed))
    job = rm.new_job(f"the query's vector, {len(ids)} token(s)")
    rows = [int(i) for i in ids]

    def work():
        with rm.nn.session(backend=rm.backend(job)):
            vector = nnsight.save(shared.query_vector(embed.weight, rows).float().cpu())  # (H,)
        return rm.measured(job, vector, "embeddings")

    return rm.run(job, work)
