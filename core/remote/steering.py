"""Steering of a remote model, each call ONE job: the directions, the layer sweep, steered continuations.

What runs there is what runs here (core.intervene.steering), from one description,
core.intervene.steer_reduce (torch only, shipped with each request by nnsight.register):
- directions: one trace per prompt (no padding), capturing hidden_states[l] at the last token as
  the input of block l (l < L, core.remote.lens.lens_envoys); steer_reduce.mean_difference runs
  in the session, after the traces, and only (layers asked, H) float32 comes back: 8,259,113
  bytes for every layer of Llama-3.1-405B (tests/test_remote_steering.py), 67,113 for one.
- the sweep: for each held-out prompt, the batches the local path runs (row 0 unsteered, row
  1 + i steered at its own layer with steer_reduce.add_rows at that block's input), each reduced
  in the session by steer_reduce.sweep_scores; only the (prompts, layers) shifts, KLs and top ids
  come back (19,055 bytes for 405B's 126 layers and 3 prompts); the mean over prompts is taken here.
- continuations: nn.generate (transformers' own greedy generate) of the same batches with the
  steer added at every step (tracer.all()); only the new ids come back. `remote_pair` generates
  a prompt unsteered and steered in one session: the page's Generate button is one job.
The deltas (strength × direction, in the model's dtype) are sent; the prompts are sent as ids from
the local tokenizer.
"""

from __future__ import annotations

import warnings

import torch

import core.intervene.steer_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys
from core.remote.model import RemoteLoadedModel
from core.running.trace import last_logits_only

Batch = tuple[list[int], list[tuple[int, list[int], torch.Tensor]]]  # (layers, [(layer, rows, deltas)])


def batch_edits(layers: list[int], deltas: torch.Tensor, first_row: int) -> list[tuple[int, list[int], torch.Tensor]]:
    """[(layer, its rows, their deltas (rows, H))] in the order the blocks run (what a trace can edit)."""
    edits = []
    for layer in sorted(set(layers)):
        indices = [i for i, l in enumerate(layers) if l == layer]
        edits.append((layer, [first_row + i for i in indices], deltas[indices].detach().cpu()))
    return edits


def remote_directions(lm: RemoteLoadedModel, positive: list[list[int]], negative: list[list[int]],
                      layers: list[int]) -> torch.Tensor:
    """Mean last-token hidden_states[l] of `positive` minus `negative` (token ids), for l in `layers`:
    (len(layers), H) float32, from one job. Raises RemoteError with a plain message."""
    nnsight = shipping(shared)
    rm = lm.remote
    blocks, nn = lens_envoys(rm)[0], rm.nn
    job = rm.new_job(f"steering direction, {len(positive)} + {len(negative)} prompts, {len(layers)} layers")
    order = sorted(set(layers))  # a trace reads the blocks in the order they run
    where = [order.index(layer) for layer in layers]

    def work():
        with nn.session(backend=rm.backend(job)):
            found = []  # per prompt: (layers, H)
            for ids in [*positive, *negative]:
                with nn.trace(torch.tensor([ids])):  # (1, T)
                    found.append(torch.stack([blocks[layer].input[0, -1] for layer in order]).float())
            states = torch.stack(found)  # (P + N, layers, H)
            result = nnsight.save(shared.mean_difference(states[:len(positive)], states[len(positive):])[where])
        return rm.measured(job, result, "steering")

    return rm.run(job, work)


def remote_sweep(lm: RemoteLoadedModel, prompts: list[list[int]], batches: list[Batch],
                 first: list[int], second: list[int]) -> list[list[dict[str, torch.Tensor]]]:
    """sweep_scores of every (prompt, batch), from one job: [prompt][batch] -> its dict of small tensors.

    batches: (the batch's layers, batch_edits of rows 1..) as the local sweep runs them.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    blocks, nn = lens_envoys(rm)[0], rm.nn
    # the head on the last row only, as the local path runs it (made here: the session body must not name lm)
    keeps = [{name: torch.tensor([len(ids) - 1]) for name in last_logits_only(lm, len(ids))} for ids in prompts]
    job = rm.new_job(f"steering every layer, {len(prompts)} prompts x {len(batches)} batches")

    def work():
        with nn.session(backend=rm.backend(job)):
            scores = []
            for ids, keep in zip(prompts, keeps):
                per_prompt = []
                for chunk, edits in batches:
                    with nn.trace(torch.tensor([ids] * (len(chunk) + 1)), use_cache=False, **keep):  # (rows, T)
                        for layer, rows, deltas in edits:
                            blocks[layer].input = shared.add_rows(blocks[layer].input, deltas, rows)
                        per_prompt.append(shared.sweep_scores(nn.output.logits[:, -1], first, second))
                scores.append(per_prompt)
            result = nnsight.save(scores)
        return rm.measured(job, result, "steering")

    return rm.run(job, work)


def remote_continuations(lm: RemoteLoadedModel, ids: list[int], batches: list[Batch], *, max_new_tokens: int,
                         pad: int | None) -> list[torch.Tensor]:
    """The greedy new ids of each batch (rows, new), every row steered as `batches` says, in one job."""
    nnsight = shipping(shared)
    rm = lm.remote
    blocks, nn = lens_envoys(rm)[0], rm.nn
    options = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": pad}
    job = rm.new_job(f"steered continuations, {sum(len(c) for c, _ in batches)} layers")

    def work():
        with warnings.catch_warnings(), nn.session(backend=rm.backend(job)):
            warnings.filterwarnings("ignore", message=".*was never reached")  # the open loop's end, by design
            found = []  # per batch: its new ids (rows, new)
            for chunk, edits in batches:
                batch = torch.tensor([list(ids)] * len(chunk))  # (rows, T)
                with nn.generate(attention_mask=torch.ones_like(batch), **options) as tracer:
                    with tracer.invoke(batch):
                        for _ in tracer.all():  # an open loop: the prompt pass and every new token
                            for layer, rows, deltas in edits:
                                blocks[layer].input = shared.add_rows(blocks[layer].input, deltas, rows)
                    with tracer.invoke():  # on the whole batch, after the loop above
                        found.append(tracer.result[:, batch.shape[1]:].clone())  # (rows, new); a slice would send its whole storage
            result = nnsight.save(found)
        return rm.measured(job, result, "steering")

    return rm.run(job, work)


def remote_pair(lm: RemoteLoadedModel, prompt: str, steer, *, max_new_tokens: int, chat: bool):
    """(unsteered, steered) greedy Generations of `prompt`, in ONE job: two nn.generate calls of one session,
    each as core.remote.generation.remote_generate_ids runs it alone (the steered one with the same
    processors and sampling.add_delta at hidden_states[layer] on every step)."""
    import dataclasses
    import time

    import core.intervene.sampling as sampling
    from core.intervene.generation import (MAX_PROMPT_TOKENS, Generation, _check_settings, _eos_ids, _model_ids,
                                           pad_id, steer_delta)

    _check_settings(max_new_tokens, 0.0, 1.0, 0)
    nnsight = shipping(shared, sampling)
    rm = lm.remote
    nn = rm.nn
    layer, delta = steer_delta(lm, steer)
    delta = delta.detach().cpu()  # (hidden,)
    prompt_ids = _model_ids(lm, prompt, chat)
    ids = torch.tensor([prompt_ids[:MAX_PROMPT_TOKENS]])  # (1, T)
    block = lens_envoys(rm)[0][layer]
    options = [{"attention_mask": torch.ones_like(ids), "do_sample": False, "max_new_tokens": int(max_new_tokens),
                "logits_processor": sampling.processors(lm.name, 0.0, 1.0, 0, edited), "pad_token_id": pad_id(lm)}
               for edited in (False, True)]  # as core.intervene.generation passes them
    job = rm.new_job(f"generate {max_new_tokens} tokens (greedy), unsteered and steered")
    start = time.perf_counter()

    def work():
        with warnings.catch_warnings(), nn.session(backend=rm.backend(job)):
            warnings.filterwarnings("ignore", message=".*was never reached")  # the open loop's end, by design
            with nn.generate(**options[0]) as tracer:
                with tracer.invoke(ids):
                    pass
                with tracer.invoke():
                    plain = tracer.result[0, ids.shape[1]:].clone()  # (new,)
            with nn.generate(**options[1]) as tracer:
                with tracer.invoke(ids):
                    for _ in tracer.all():  # an open loop: the prompt pass and every new token
                        block.input = sampling.add_delta(block.input, delta)
                with tracer.invoke():
                    steered = tracer.result[0, ids.shape[1]:].clone()  # (new,)
            result = nnsight.save([plain, steered])
        return rm.measured(job, result, "steering")

    found = rm.run(job, work)
    seconds = time.perf_counter() - start
    eos = _eos_ids(lm)
    made = []
    for new in found:
        new_ids = tuple(int(i) for i in new.tolist())
        made.append(Generation(text=lm.tokenizer.decode(list(new_ids), skip_special_tokens=True), token_ids=new_ids,
                               prompt_ids=tuple(ids[0].tolist()), temperature=0.0, top_p=1.0, seed=0,
                               max_new_tokens=int(max_new_tokens), seconds=seconds,
                               ended=bool(new_ids) and new_ids[-1] in eos,
                               prompt_truncated=len(prompt_ids) > MAX_PROMPT_TOKENS))
    return made[0], dataclasses.replace(made[1], settings={"steer_layer": int(layer),
                                                           "steer_strength": float(steer.strength)})


def direction_bytes(lm, layers: int) -> int:
    """Bytes a directions job brings back for `layers` layers: mean_difference run on meta tensors of the
    captured shapes (lm may be on the meta device), measured on zeros."""
    states = torch.empty(2, int(layers), lm.parts.layout.hidden_size, device="meta")  # (prompts, layers, H)
    made = shared.mean_difference(states[:1], states[1:])  # (layers, H)
    return result_bytes({"steering": torch.zeros(made.shape, dtype=made.dtype)})


def sweep_bytes(lm, prompts: int, layers: int, rows: int) -> int:
    """Bytes a sweep job brings back: sweep_scores of every (prompt, batch of at most rows - 1 layers), run on
    meta next-token scores (rows, V) and measured on zeros."""
    sizes = [min(rows - 1, layers - start) for start in range(0, layers, rows - 1)]
    scores = [shared.sweep_scores(torch.empty(size + 1, lm.vocab_size, device="meta"), [0], [1]) for size in sizes]
    return result_bytes({"steering": [[{name: torch.zeros(value.shape, dtype=value.dtype)  # fresh zeros for each
                                        for name, value in score.items()} for score in scores]  # (prompt, batch)
                                      for _ in range(prompts)]})
