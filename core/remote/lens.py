"""The logit lens of a remote model as ONE job: captured and reduced where the model runs.

What is captured: hidden_states[l] for l = 0..L at every position, read as the input of block l
(l < L) and the output of the final norm (l = L; the last block's output where there is no final
norm): the same rows core.running.trace records. How they are reduced: the local lens's own code,
core.running.lens_reduce.lens_request (shipped by value with the request, nnsight.register), with
the options core.running.lens decides for this model (head_options). So there is no second lens
written for nnsight: core.running.lens.logit_lens / token_trajectory (and core.running.lens_page, both in
one job) call lens_job for a remote model, and only the top-k ids and probabilities (and a trajectory's
ranks and probabilities) come back: ((L + 1) x T x k) x 12 bytes, 182,880 for Llama-3.1-405B at 12 tokens and k = 10.

nnsight is imported when the first job is built, not when core is imported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import core.remote.reduce as reduce
import core.running.lens_reduce as shared
from core.remote.jobs import shipping
from core.remote.model import RemoteLoadedModel, RemoteModel
from core.remote.reduce import first
from core.running.lens_reduce import BLOCK_BYTES, ROWS_PER_PASS, VOCAB_BLOCK, lens_request, never
from core.running.lens_table import top_k_table
from core.running.trace import MAX_TRACE_TOKENS, Trace
from core.text.tokens import encode, require_tokenizer

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


def prompt_ids(lm, prompt: str | Trace) -> list[int]:
    """A remote model's input: the token ids run_trace makes of `prompt` (BOS included, cut at
    MAX_TRACE_TOKENS), or a Trace's own (its hidden states are not needed: the job recomputes them there)."""
    if isinstance(prompt, Trace):
        return [int(i) for i in prompt.token_ids]
    require_tokenizer(lm)
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty: type some text.")
    return encode(lm, prompt)[0][:MAX_TRACE_TOKENS]


def lens_job(lm: RemoteLoadedModel, ids: list[int], *, head: dict, grid: dict | None = None,
             trajectory: dict | None = None, budget: int | None = None,
             time_limit: float | None = None) -> dict[str, np.ndarray]:
    """Run lens_request for token `ids` (T,) where `lm` runs, as one NDIF job; its values as NumPy arrays.

    head: core.running.lens.head_options(lm, row counts); grid / trajectory: as lens_request takes
    them. Raises RemoteError (core.remote.errors) with a plain message, also for a result over `budget`.
    """
    nnsight = shipping(shared, reduce)
    rm = lm.remote
    layers, norm, project_out, lm_head = lens_envoys(rm)
    count = len(layers)
    input_ids = torch.tensor([ids])  # (1, T)
    own = trajectory is not None and trajectory["target_id"] is None and trajectory["position"] == len(ids) - 1
    what = " and ".join(name for name, asked in (("logit lens", grid), ("trajectory", trajectory)) if asked)
    options = {key: value for key, value in (("budget", budget), ("time_limit", time_limit)) if value is not None}
    job = rm.new_job(f"{what}, {len(ids)} tokens", **options)
    nn = rm.nn

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(input_ids):
                states = [layers[layer].input for layer in range(count)]  # hidden_states[l], (1, T, H) each
                states.append(norm.output if norm is not None else first(layers[count - 1].output))  # [L], normed
                final = lm_head.output[0, -1] if own else None  # the model's own last logits (V,)
                lens = nnsight.save(lens_request(states, final, norm=norm, project_out=project_out,
                                                 head=lm_head, grid=grid, trajectory=trajectory, **head))
        return rm.measured(job, lens, "lens")

    values = rm.run(job, work)
    return {name: np.asarray(value) for name, value in values.items()}


def remote_lens_last(lm: RemoteLoadedModel, prompt: str, k: int = 5, *, budget: int | None = None,
                     time_limit: float | None = None) -> pd.DataFrame:
    """Top-k next tokens at the LAST position of every layer, in one job (Home's test request).

    Columns as core.running.lens.logit_lens: layer, position, rank, token, token_id, prob. The head is
    read in its own dtype (as on NDIF's GPUs): a 16-bit model simulated on this CPU may differ from
    the local lens in the last bits (the local lens upcasts where measured faster).
    """
    ids = prompt_ids(lm, prompt)
    k = max(1, min(int(k), lm.vocab_size))
    layout = lm.parts.layout
    head = {"multiplier": layout.logit_multiplier, "softcap": layout.logit_softcap, "upcast": never,
            "vocab_block": VOCAB_BLOCK, "block_bytes": BLOCK_BYTES}
    result = lens_job(lm, ids, head=head, grid={"k": k, "step": ROWS_PER_PASS, "last_only": True}, budget=budget,
                      time_limit=time_limit)
    entries = lm.num_layers + 1
    return top_k_table(lm, np.arange(entries), np.full(entries, len(ids) - 1), result["ids"], result["probs"])
