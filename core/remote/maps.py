"""Hidden-state maps of a remote model: every sentence in ONE job, only the Gram matrices come back.

What is captured: hidden_states[l] for l = 0..L of each sentence, read as lens.py reads them (the
input of block l for l < L, the final norm's output for l = L, the last block's output where there
is no final norm), in float32 as core.running.trace keeps them. Each sentence is one trace of one
nnsight session (so no padding changes a number). How it is reduced, where the model runs: the
local path's own code (core.running.maps_reduce, shipped by value): each item's word pooled over
its positions (L+1, H), then the items' inner products at every entry. What comes back: one
(L+1, N, N) float64 tensor, 586,793 bytes for Llama-3.1-405B at MAX_ITEMS = 24 items
(tests/test_remote_maps.py), instead of the items' vectors (24 x 127 x 16,384 x 4 B = 200 MB).
The maps, silhouettes and probe accuracies are computed here from those numbers alone
(core.running.maps.maps_from_grams), as for a local model.

Which tokens are the word is decided by the caller from the local tokenizer (core.running.maps.model_maps),
so only token ids and positions are sent.
"""

from __future__ import annotations

import numpy as np
import torch

import core.remote.reduce as reduce
import core.running.maps_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys
from core.remote.model import RemoteLoadedModel
from core.remote.reduce import first


def maps_job(lm: RemoteLoadedModel, ids: list[list[int]], positions: list[list[int]], pooling: str) -> np.ndarray:
    """Run every sentence (token ids `ids`, N lists) where `lm` runs, as one job; pool item n's word over
    positions[n] and return the items' Gram matrices (L+1, N, N) float64. Raises RemoteError with a plain message."""
    nnsight = shipping(reduce, shared)
    rm = lm.remote
    layers, norm, _, _ = lens_envoys(rm)
    count, nn = len(layers), rm.nn
    job = rm.new_job(f"hidden-state maps, {len(ids)} sentences")

    def work():
        with nn.session(backend=rm.backend(job)):
            vectors = []  # per item: its word's vector at every entry, (L+1, H)
            for sentence, where in zip(ids, positions):
                with nn.trace(torch.tensor([sentence])):  # (1, T)
                    states = [layers[layer].input for layer in range(count)]  # hidden_states[l], (1, T, H) each
                    states.append(norm.output if norm is not None else first(layers[count - 1].output))
                    # pooled inside the trace: only (L+1, H) per sentence stays on the server's GPU
                    vectors.append(shared.pool(torch.stack(states)[:, 0].float(), where, pooling))
            grams = nnsight.save(shared.gram(torch.stack(vectors)))  # (L+1, N, N)
        return rm.measured(job, grams, "maps")

    return rm.run(job, work).cpu().numpy()


def maps_bytes(lm, items: int) -> int:
    """Bytes a maps job brings back for `items` items: maps_reduce.gram run on meta tensors of the pooled
    shapes (N, L+1, H) float32 (lm may be on the meta device), measured on zeros of the result's shape."""
    vectors = torch.empty(int(items), lm.num_layers + 1, lm.parts.layout.hidden_size, device="meta")  # (N, L+1, H)
    grams = shared.gram(vectors)  # (L+1, N, N)
    return result_bytes({"maps": torch.zeros(grams.shape, dtype=grams.dtype)})
