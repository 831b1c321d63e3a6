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
from core.remote.jobs import result_bytes
from core.remote.lens import _nnsight, module_path
from core.remote.model import RemoteLoadedModel

_SHIPPED: list = []  # nnsight, once neighbour_reduce is registered to be shipped


def _registered():
    """nnsight with neighbour_reduce registered (the server has no `core`)."""
    nnsight = _nnsight()
    if not _SHIPPED:
        nnsight.register(shared)
        _SHIPPED.append(nnsight)
    return nnsight


def neighbour_bytes(k: int) -> int:
    """torch.save bytes of what a neighbours job brings back: k ids (int64) and k cosines (float32)."""
    return result_bytes({"neighbours": (torch.zeros(k, dtype=torch.int64), torch.zeros(k))})


def neighbours_job(lm: RemoteLoadedModel, ids: list[int], k: int, exclude=()) -> tuple[list[int], list[float]]:
    """Ids and cosines of the k tokens whose embedding is closest to the mean row of `ids`, best first,
    computed where `lm` runs (top_cosine_rows over the whole table there). Raises RemoteError."""
    nnsight = _registered()
    rm = lm.remote
    embed = rm.nn.get(module_path(rm.nn._module, lm.parts.embed))
    job = rm.new_job(f"nearest tokens, k={k}")
    query, left_out = [int(i) for i in ids], sorted({int(i) for i in exclude})

    def work():
        with rm.nn.session(backend=rm.backend(job)):
            table = embed.weight  # (V, H), the server's own
            found, cosines = shared.top_cosine_rows(table, shared.compute_inverse_norms(table),
                                                    shared.query_vector(table, query), k, left_out)
            result = nnsight.save((torch.tensor(found), torch.tensor(cosines)))  # (k,) int64, (k,) float32
        if rm.target.is_simulation:  # nothing crossed a wire: measure what NDIF would have sent
            size = result_bytes({"neighbours": result})
            job.check_bytes(size)
            job.stats.bytes_received = size
        return result

    found, cosines = rm.run(job, work)
    return found.tolist(), cosines.tolist()
