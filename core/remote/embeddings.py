"""The embedding neighbours of a remote model: the search runs where the table is, in ONE job.

What is sent: the query's token ids (from the local tokenizer), k and the ids to leave out. In one
nnsight session, on the server's copy of the input-embedding table (V, H), the query's vector, the
inverse row norms and the cosine top-k are computed by core.weights.neighbour_reduce (torch only,
shipped by value; the local path runs the same functions). What comes back: k ids and k cosines,
about 2 kB at k = 200 for any model (Llama-3.1-405B's 128,256 x 16,384 table never moves).
"""

from __future__ import annotations

import torch

import core.weights.neighbour_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import module_path
from core.remote.model import RemoteLoadedModel

def neighbour_bytes(k: int, rank: bool = False) -> int:
    """torch.save bytes of what a neighbours job brings back: k ids (int64), k cosines (float32), and the
    expected token's rank (one int64) when asked."""
    values = (torch.zeros(k, dtype=torch.int64), torch.zeros(k))  # (k,) ids, (k,) cosines
    values += (torch.zeros((), dtype=torch.int64),) if rank else ()
    return result_bytes({"neighbours": values})


def neighbours_job(lm: RemoteLoadedModel, terms: list[list[int]], k: int, *, exclude=(),
                   expected: int | None = None) -> tuple[list[int], list[float], int | None]:
    """Ids and cosines of the k tokens closest to the query, best first, and where token `expected` ranks
    (None when not asked), computed where `lm` runs over the whole table there. One term: the query is
    the mean row of its ids (nearest_tokens); three: a - b + c by 3CosAdd (arithmetic). Raises RemoteError."""
    nnsight = shipping(shared)
    rm = lm.remote
    embed = rm.nn.get(module_path(rm.nn._module, lm.parts.embed))
    job = rm.new_job(f"nearest tokens, k={k}")
    query, left_out = [[int(i) for i in ids] for ids in terms], sorted({int(i) for i in exclude})

    def work():
        with rm.nn.session(backend=rm.backend(job)):
            table = embed.weight  # (V, H), the server's own
            inverse = shared.compute_inverse_norms(table)  # (V,)
            vectors = [shared.query_vector(table, ids) for ids in query]  # each (H,)
            q = vectors[0] if len(vectors) == 1 else shared.three_cos_add(*vectors)
            found, cosines = shared.top_cosine_rows(table, inverse, q, k, left_out)
            extra = () if expected is None else (torch.tensor(shared.rank_in(table, inverse, q, expected, left_out)),)
            result = nnsight.save((torch.tensor(found), torch.tensor(cosines)) + extra)  # (k,) int64, (k,) fp32
        if rm.target.is_simulation:  # nothing crossed a wire: measure what NDIF would have sent
            size = result_bytes({"neighbours": result})
            job.check_bytes(size)
            job.stats.bytes_received = size
        return result

    values = rm.run(job, work)
    return values[0].tolist(), values[1].tolist(), int(values[2]) if expected is not None else None
