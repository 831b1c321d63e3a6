"""Patchscopes on a remote model (Ghandeharioun et al. 2024): a whole layer sweep as ONE job.

What runs where the model runs, in one nnsight session:
- the source prompt is traced once and hidden_states[l][0, source_position] (the input of block l)
  is kept for every asked layer: those states stay there, they are never saved;
- the target prompt then runs as a batch, one row per source layer (at most MAX_ROWS rows per
  `nn.generate`, several in the same session), with row i's hidden_states[target_layer or l] at the
  placeholder replaced by core.intervene.patch_reduce.replace_rows, the edit the local path makes
  (shipped by value, nnsight.register). Written without `tracer.all()`, an intervention binds to the
  first forward pass only: the prompt's; the new tokens read the patched prompt through the cache;
- greedy decoding as core.intervene.patchscopes.generate_rows runs it (do_sample=False, the pad id,
  an all-ones attention mask; RequireFinite stops on NaN scores).
Only the new token ids come back: (rows, new) int64 per batch (a copy: a slice of generate's output
would be saved with its whole storage, the prompt's ids included). For Llama-3.1-405B's 126 layers on
the lecture's 12 tokens: 42,397 bytes at the page's most new tokens (40), 203,677 at core's most (200)
(tests/test_remote_patchscopes.py).

Which rows, layers and positions, and the EOS cut after the ids come back, are decided by
core.intervene.patchscopes from the local tokenizer and generation config: only ids are sent.
The local path's shared-prefix cache stays local (the server runs the whole prompt in every row).
"""

from __future__ import annotations

import warnings

import torch

import core.intervene.patch_reduce as shared
import core.intervene.patchscopes as local
import core.intervene.sampling as sampling
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys, prompt_ids
from core.remote.model import RemoteLoadedModel
from core.running.trace import Trace


def remote_patchscope(lm: RemoteLoadedModel, source: str | Trace, source_position, target_prompt: str, layers,
                      target_layer, placeholder: str, max_new_tokens, chat: bool):
    """core.intervene.patchscopes.patchscope(_from_trace) of a remote model: the same checks, rows and EOS
    cut as the local path (a Trace gives only its token ids), the run ONE job where `lm` runs. Its DataFrame."""
    source_ids = prompt_ids(lm, source)  # (S,) run_trace's, from the local tokenizer alone
    layers, target_layer, max_new_tokens, source_position, ids, position = local.checked_sweep(
        lm, len(source_ids), source_position, target_prompt, layers, target_layer, placeholder, max_new_tokens, chat)
    plans = [(chunk, local.row_plan(chunk, target_layer)) for chunk in
             (layers[start:start + local.MAX_ROWS] for start in range(0, len(layers), local.MAX_ROWS))]
    new = remote_patch_rows(lm, source_ids, source_position, ids, position, plans, max_new_tokens)
    return local.answer_table(lm, layers, local.cut_at_eos(lm, new))


def remote_patch_rows(lm: RemoteLoadedModel, source_ids: list[int], source_position: int, ids: list[int],
                      position: int, plans: list[tuple[list[int], dict[int, list[int]]]],
                      max_new_tokens: int) -> list[list[int]]:
    """The greedy new ids of every patched row, source layer by source layer, from one job where `lm` runs.

    source_ids (S,) and source_position: the source prompt's ids and the token read; ids (T,) and
    position: the target prompt's ids and its placeholder; plans: one (source layers of the rows,
    {layer patched: rows}) per batch (core.intervene.patchscopes.row_plan). Rows are not cut at EOS.
    Raises RemoteError with a plain message.
    """
    nnsight = shipping(shared, sampling)
    rm = lm.remote
    nn = rm.nn
    blocks = lens_envoys(rm)[0]
    needed = sorted({layer for chunk, _ in plans for layer in chunk})  # in the order the blocks run
    index = {layer: i for i, layer in enumerate(needed)}
    source = torch.tensor([list(source_ids)])  # (1, S)
    pad = local.pad_id(lm)  # read here: what the session body names is sent (the LoadedModel holds a lock)
    batches = []  # per batch: its input ids, generate's options, and (block, rows, rows of the source states)
    for chunk, plan in plans:
        batch = torch.tensor([list(ids)] * len(chunk))  # (rows, T)
        options = {"attention_mask": torch.ones_like(batch), "do_sample": False, "max_new_tokens": max_new_tokens,
                   "pad_token_id": pad, "logits_processor": sampling.processors(lm.name, 0.0, 1.0, 0, True)}
        edits = [(blocks[layer], rows, [index[chunk[row]] for row in rows]) for layer, rows in plan.items()]
        batches.append((batch, options, edits))
    job = rm.new_job(f"Patchscopes, {len(needed)} source layers, {max_new_tokens} new tokens")

    def work():
        with warnings.catch_warnings(), nn.session(backend=rm.backend(job)):
            with nn.trace(source):
                states = torch.stack([blocks[layer].input[0, source_position] for layer in needed])  # (n, H)
            new = []
            for batch, options, edits in batches:
                with nn.generate(**options) as tracer:  # one line: nnsight reads the block from its `with`
                    with tracer.invoke(batch):
                        for block, rows, picked in edits:  # no tracer.all(): the prompt's pass only
                            block.input = shared.replace_rows(block.input, rows, position, states[picked])
                    with tracer.invoke():  # on the whole batch, after the edits above
                        # (rows, new): a copy, as a slice would be saved with the prompt's ids (its storage)
                        new.append(tracer.result[:, batch.shape[1]:].clone(memory_format=torch.contiguous_format))
            result = nnsight.save(new)
        return rm.measured(job, result, "patchscopes")

    return [row for rows in rm.run(job, work) for row in rows.tolist()]


def patchscope_bytes(num_layers: int, tokens: int, max_new_tokens: int, max_rows: int) -> int:
    """Bytes a sweep over `num_layers` source layers brings back: generate's (rows, tokens + new) int64 ids
    cut to the new ones as the job cuts them (on meta tensors), per batch of at most `max_rows` rows."""
    batches = [min(max_rows, num_layers - start) for start in range(0, num_layers, max_rows)]
    cut = [torch.empty(rows, tokens + max_new_tokens, dtype=torch.long, device="meta")[:, tokens:] for rows in batches]
    return result_bytes({"patchscopes": [torch.zeros(c.shape, dtype=c.dtype) for c in cut]})
