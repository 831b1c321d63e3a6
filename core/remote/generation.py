"""The next token and continuations of a remote model, each as ONE job: reduced where the model runs.

What runs there is what runs here (core.intervene.generation), from one description:
- the next-token table: the model's own last-position scores (after any soft-capping: the model's
  output, not the head's), reduced by core.intervene.sampling.top_next to the top k (+ a few, so
  ties are ordered here as the local table orders them) under softmax(scores / T). Only those come
  back: (k + 8) x 16 bytes. `next_token_logits` brings back the whole row (vocab x 4 bytes).
- a continuation: transformers' own `generate` through nnsight's `model.generate`, greedy, with the
  logits processors core.intervene.sampling.processors builds for the local path (temperature,
  top-p, and the draw of a generator of its own seeded by `seed`), and a steer added to the input of
  block l (hidden_states[l]) on the prompt pass and every new token, with the same add_delta. Only
  the new token ids come back.
core.intervene.sampling is shipped with each request (nnsight.register: the server has no `core`).

Streaming: nnsight 0.8.1 sends a job's result when the job ends, so a remote continuation arrives
whole; core.intervene.generation then calls on_token for each of its tokens at once.
A seeded sample is reproduced on the same kind of device: the generator lives where the scores
are (NDIF's GPUs draw other numbers than this CPU for the same seed; the simulation runs here).
"""

from __future__ import annotations

import warnings

import torch

import core.intervene.sampling as sampling
from core.remote.jobs import shipping
from core.remote.lens import lens_envoys
from core.remote.model import RemoteLoadedModel
from core.running.trace import last_logits_only

def remote_next_token(lm: RemoteLoadedModel, ids: list[int], *, k: int | None = None,
                      temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The next token after token `ids` (T,), in one job where `lm` runs.

    k None: {"logits": (vocab,)} in the model's dtype; else top_next's {"ids": (n,), "probs": (n,)}.
    Raises RemoteError (core.remote.errors) with a plain message.
    """
    nnsight = shipping(sampling)
    rm = lm.remote
    nn = rm.nn
    input_ids = torch.tensor([list(ids)])  # (1, T)
    # the head on the last row only, as the local path runs it (the index made here: a meta model's is on meta)
    keep = {name: torch.tensor([len(ids) - 1]) for name in last_logits_only(lm, len(ids))}
    job = rm.new_job(f"next token, {len(ids)} tokens" if k is None else f"top {k} next tokens, {len(ids)} tokens")

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(input_ids, use_cache=False, **keep):
                scores = nn.output.logits[0, -1]  # (vocab,) the model's own, soft-capped where it caps
                if k is None:
                    result = nnsight.save({"logits": scores.detach().clone()})
                else:
                    result = nnsight.save(sampling.top_next(scores, k, temperature))
        return rm.measured(job, result, "result")

    return rm.run(job, work)


def remote_generate_ids(lm: RemoteLoadedModel, input_ids: list[int], *, max_new_tokens: int, temperature: float,
                        top_p: float, seed: int, steer: tuple[int, torch.Tensor] | None = None) -> tuple[int, ...]:
    """The new token ids of a continuation of `input_ids` (T,), generated in one job where `lm` runs.

    Checked settings (core.intervene.generation checks them). steer: (layer, delta (hidden,)) from
    core.intervene.generation.steer_delta, added to hidden_states[layer] at every position and step.
    """
    from core.intervene.generation import pad_id

    nnsight = shipping(sampling)
    rm = lm.remote
    nn = rm.nn
    ids = torch.tensor([list(input_ids)])  # (1, T)
    pad = pad_id(lm)  # read here: what the session body names is sent (the LoadedModel holds a lock)
    chain = sampling.processors(lm.name, temperature, top_p, seed, steer is not None)
    block = lens_envoys(rm)[0][steer[0]] if steer is not None else None
    delta = steer[1].detach().cpu() if steer is not None else None  # (hidden,)
    options = {"attention_mask": torch.ones_like(ids), "do_sample": False, "max_new_tokens": max_new_tokens,
               "logits_processor": chain, "pad_token_id": pad}  # as core.intervene.generation passes them
    how = "greedy" if temperature == 0 else f"sampled, T {temperature:g}, seed {seed}"
    job = rm.new_job(f"generate {max_new_tokens} tokens ({how}{', steered' if steer else ''})")

    def work():
        with warnings.catch_warnings(), nn.session(backend=rm.backend(job)):
            warnings.filterwarnings("ignore", message=".*was never reached")  # the open loop's end, by design
            with nn.generate(**options) as tracer:  # one line: nnsight reads the block from its `with`
                with tracer.invoke(ids):
                    if block is not None:  # an open loop: it ends when the generation does
                        for _ in tracer.all():  # the prompt pass and every new token
                            block.input = sampling.add_delta(block.input, delta)
                with tracer.invoke():  # on the whole batch, after the loop above
                    new = nnsight.save(tracer.result[0, ids.shape[1]:].clone())  # (new,) a copy: a slice sends its storage
        return rm.measured(job, new, "result")

    return tuple(int(i) for i in rm.run(job, work).tolist())
