"""The logit lens of a remote model, reduced inside the trace: only top-k ids and probabilities come back.

What is captured (the same rows core.running.lens decodes): hidden_states[l] at the last position
for l = 0..L, read as the input of block l (l < L) and the output of the final norm (l = L; the last
block's output where there is no final norm). How it is reduced: core.remote.reduce.lens_top_k, the
function the local path can call too. The whole page is one NDIF job (`session`), and
(L + 1) x k ids and probabilities come back: 127 x 10 x 12 bytes for Llama-3.1-405B.
"""

from __future__ import annotations

import numpy as np
import nnsight
import pandas as pd
import torch

import core.remote.reduce as reduce
from core.remote.jobs import result_bytes
from core.remote.model import RemoteLoadedModel, RemoteModel
from core.remote.reduce import first, lens_top_k
from core.running.trace import MAX_TRACE_TOKENS
from core.text.tokens import display_token, encode

nnsight.register(reduce)  # shipped by value with every request: the server has no `core`


def module_path(root, module) -> str:
    """Dotted path of `module` inside `root` (an nn.Module), e.g. "model.layers" (RemoteError-free: parts found it)."""
    for path, candidate in root.named_modules():
        if candidate is module:
            return path
    raise ValueError(f"{type(module).__name__} is not part of {type(root).__name__}")


def lens_envoys(rm: RemoteModel):
    """(layers, final norm or None, project_out or None, head) as envoys of rm.nn, found through core's parts."""
    parts = rm.lm.parts
    root = rm.nn._module

    def envoy(module):
        return None if module is None else rm.nn.get(module_path(root, module))

    return envoy(parts.layers), envoy(parts.final_norm), envoy(parts.project_out), envoy(parts.lm_head)


def prompt_ids(rm: RemoteModel, prompt: str) -> torch.Tensor:
    """(1, T) token ids exactly as core's run_trace makes them (BOS included, cut at MAX_TRACE_TOKENS)."""
    ids, _ = encode(rm.lm, prompt)
    return torch.tensor([ids[:MAX_TRACE_TOKENS]])


def remote_lens_last(lm: RemoteLoadedModel, prompt: str, k: int = 5, *, budget: int | None = None,
                     time_limit: float | None = None) -> pd.DataFrame:
    """Top-k next tokens at the LAST position of every layer, computed where the model runs (one job).

    Columns as core.running.lens.logit_lens (restricted to the last position): layer, position,
    rank, token, token_id, prob. Raises RemoteError (core.remote.errors) with a plain message.
    """
    rm = lm.remote
    layout = lm.parts.layout
    k = max(1, min(int(k), rm.lm.vocab_size))
    ids = prompt_ids(rm, prompt)  # (1, T)
    layers, norm, project_out, head = lens_envoys(rm)
    count = len(layers)
    multiplier, softcap = layout.logit_multiplier, layout.logit_softcap
    options = {key: value for key, value in (("budget", budget), ("time_limit", time_limit)) if value is not None}
    job = rm.new_job(f"logit lens, {ids.shape[1]} tokens", **options)
    nn = rm.nn

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(ids):
                rows = [layers[layer].input[0, -1] for layer in range(count)]  # hidden_states[l], (H,) each
                last = norm.output if norm is not None else first(layers[count - 1].output)
                rows.append(last[0, -1])  # hidden_states[L]: already normed
                top_ids, top_probs = lens_top_k(torch.stack(rows), 1 if norm is not None else 0, norm,
                                                project_out, head, multiplier, softcap, k)
                lens_ids = nnsight.save(top_ids.cpu())  # (L + 1, k) int64
                lens_probs = nnsight.save(top_probs.cpu())  # (L + 1, k) float32
        if rm.target.is_simulation:  # nothing crossed a wire: measure what NDIF would have sent
            size = result_bytes({"lens_ids": lens_ids, "lens_probs": lens_probs})
            job.check_bytes(size)
            job.stats.bytes_received = size
        return lens_ids, lens_probs

    lens_ids, lens_probs = rm.run(job, work)
    return _table(rm, np.asarray(lens_ids), np.asarray(lens_probs), ids.shape[1] - 1)


def _table(rm: RemoteModel, ids: np.ndarray, probs: np.ndarray, position: int) -> pd.DataFrame:
    entries, k = ids.shape
    names = {i: display_token(rm.lm, int(i)) for i in np.unique(ids)}
    return pd.DataFrame({
        "layer": np.repeat(np.arange(entries), k),
        "position": position,
        "rank": np.tile(np.arange(1, k + 1), entries),
        "token": [names[i] for i in ids.ravel()],
        "token_id": ids.ravel().astype(np.int64),
        "prob": probs.ravel().astype(np.float32),
    })
