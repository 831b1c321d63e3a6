"""What each block writes, for a remote model, as ONE job: the residual stream taken apart where it runs.

What is captured: hidden_states[0] (the input of block 0) and what every attention and MLP sub-block
adds to the residual stream (the output of `Parts.sub_blocks`' *_writes modules, Granite's residual
multiplier applied), the final norm's input and output, and the head's own last logits: the values
core.cause.blocks' hooks keep. They are reduced there by the local path's own arithmetic,
core.cause.block_reduce (shipped by value, nnsight.register): the frozen final norm (its weight, w or
1 + w, read off its own output), the head rows and the per-block numbers. What comes back:
- block_contributions: every part's write size (P, T) and direct effect on the target (P,) in float64,
  the bias term, the model's own logit and the target id: 28,825 bytes for Llama-3.1-405B (253 parts)
  on the lecture's 12 tokens (tests/test_remote_cause.py);
- with them, for the Block writes page (core.cause.blocks.block_page) and block_token_effects, per part
  the k promoted and k suppressed token ids and effects (P, k) each, of the same run: 211,785 bytes with
  the contributions at the page's largest k, 30;
- what_blocks_read: its three runs in one session, (layers, 2, 3) float64 back: 7,593 bytes for 405B.
The Block writes page asks for both in ONE job (block_writes_job; core.cause.reads.block_writes_page):
218,053 bytes for 405B at k = 30.
"""

from __future__ import annotations

import numpy as np
import torch

import core.cause.block_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys, module_path
from core.remote.model import RemoteLoadedModel
from core.running.trace import last_logits_only


def _envoy(rm, module):
    return rm.nn.get(module_path(rm.nn._module, module))


def reads_job(lm: RemoteLoadedModel, ids: list[int], changed_ids: list[int], position: int) -> np.ndarray:
    """what_blocks_read's three runs (original, changed, changed with every sub-block's input at `position`
    held at the original's) as one job; only the (layers, 2, 3) float64 changes come back."""
    return block_writes_job(lm, reads={"ids": ids, "changed_ids": changed_ids, "position": position})["reads"]


def block_writes_job(lm: RemoteLoadedModel, *, blocks: dict | None = None, reads: dict | None = None) -> dict:
    """The Block writes page's runs where `lm` runs, in ONE job (one queue wait for the whole page).

    blocks: {ids (T,), target_id (None: the model's own top next token), eps (the final norm's), k (None: no
    top tokens), chunk}: one run taken apart, block_contributions's numbers (norm (P, T), logit_effect (P,),
    bias, logit, target) and with k top_effects's (P, k) ids and effects. reads: reads_job's (ids,
    changed_ids, position): the demonstration's three runs. Returns {"blocks": dict of NumPy arrays,
    "reads": (layers, 2, 3)} for the parts asked. Raises RemoteError with a plain message.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    nn = rm.nn
    parts, layout = lm.parts, lm.parts.layout
    layers, norm, project_out, head = lens_envoys(rm)
    subs = [parts.sub_blocks(layer) for layer in range(parts.num_layers)]
    writes = [(_envoy(rm, sub.attn_writes), _envoy(rm, sub.mlp_writes)) for sub in subs]
    scales = [sub.scale for sub in subs]
    sites = [[(block, _envoy(rm, read), _envoy(rm, write)) for block, read, write in
              (("attn", sub.attn_reads, sub.attn_writes), ("mlp", sub.mlp_reads, sub.mlp_writes))] for sub in subs]
    b = blocks or {}
    ids, k, chunk, T = b.get("ids", []), b.get("k"), b.get("chunk", 16_384), len(b.get("ids", []))
    keep = {name: torch.tensor([T - 1]) for name in last_logits_only(lm, T)} if blocks else {}  # made here, not on meta
    centred, multiplier = layout.norm != "RMSNorm", float(layout.logit_multiplier or 1.0)
    has = {name: getattr(module, attr, None) is not None
           for name, module, attr in (("weight", parts.final_norm, "weight"), ("norm_bias", parts.final_norm, "bias"),
                                      ("head_bias", parts.lm_head, "bias"))}
    given = None if b.get("target_id") is None else torch.tensor(int(b["target_id"]))
    eps = b.get("eps")
    r = reads or {}
    position, R = r.get("position"), len(r.get("ids", []))
    read_runs = ((r["ids"], False), (r["changed_ids"], False), (r["changed_ids"], True)) if reads else ()
    read_keep = {name: torch.tensor([R - 1]) for name in last_logits_only(lm, R)} if reads else {}
    what = [name for name, part in (("top tokens" if k else "contributions", blocks), ("3 runs read", reads)) if part]
    job = rm.new_job(f"block writes ({', '.join(what)}), {max(T, R)} tokens")

    # Inside the session, above its last trace: no comment lines and no statement over several lines.
    # nnsight 0.8.1 places a nested trace's `with` by the session body's line numbers without them, and
    # each one above it moved that place down a line (WithBlockNotFoundError).
    def work():
        with nn.session(backend=rm.backend(job)):
            out = {}
            if reads is not None:
                runs = []
                for run_ids, hold in read_runs:
                    seen = {}
                    with nn.trace(torch.tensor([run_ids]), use_cache=False, **read_keep):
                        for layer, blocks_of in enumerate(sites):  # in forward order: reads' input, writes' output
                            for block, read, write in blocks_of:
                                taken = read.input
                                if hold:
                                    taken = shared.put_at(taken, position, R, runs[0][layer, block, "in"][0])
                                    read.input = taken
                                seen[layer, block, "in"] = [shared.at_position(taken, position, R)]
                                written = shared.first(write.output)
                                seen[layer, block, "out"] = [shared.at_position(written, position, R)]
                    runs.append(seen)
                out["reads"] = shared.read_changes(*runs, len(sites)).cpu()  # (layers, 2, 3)
            if blocks is not None:
                with nn.trace(torch.tensor([ids]), use_cache=False, **keep):
                    kept = [layers[0].input[0].to(torch.float64, copy=True)]  # (T, H) hidden_states[0]
                    for (attn, mlp), scale in zip(writes, scales):  # in forward order; a copy: Falcon adds in place
                        kept.append(shared.row0(attn.output, T) * scale)
                        kept.append(shared.row0(mlp.output, T) * scale)
                    x_last = norm.input[0, -1].to(torch.float64, copy=True)  # (H,) the final norm's input
                    y_last = norm.output[0, -1].to(torch.float64, copy=True)  # (H,) and its output
                    own = head.output[0, -1]  # (V,) the head's logits, before any soft-capping
                    scores = nn.output.logits[0, -1].float()  # (V,) the model's own, after it
                    stack = torch.stack(kept)  # (P, T, H)
                    target = scores.argmax() if given is None else given
                    scale = shared.frozen_scale(x_last, centred, eps)
                    norm_bias = norm.bias if has["norm_bias"] else None
                    weight = shared.effective_weight(norm.weight if has["weight"] else None, x_last, y_last,
                                                     norm_bias, centred, scale)
                    normed = shared.frozen_apply(stack[:, -1], weight, centred, scale)  # (P, H)
                    out_weight = project_out.weight if project_out is not None else None
                    direction = shared.head_rows(head.weight, target.reshape(1), out_weight, multiplier)[0]  # (H,)
                    values = shared.block_numbers(stack, normed, direction)
                    values["bias"] = shared.bias_term(direction, norm_bias, head.bias if has["head_bias"] else None,
                                                      target, multiplier)
                    values["logit"] = own[target].double() * multiplier
                    values["target"] = target.clone()
                    if k is not None:  # the same run's top tokens of every part, for the same page
                        values.update(shared.top_effects(normed.float(), head.weight, out_weight, multiplier, k, chunk))
                    out["blocks"] = {name: value.cpu() for name, value in values.items()}
            result = nnsight.save(out)
        return rm.measured(job, result, "blocks")

    got = rm.run(job, work)
    return {"blocks": {name: value.numpy() for name, value in got["blocks"].items()} if "blocks" in got else None,
            "reads": got["reads"].numpy() if "reads" in got else None}


def reads_bytes(layers: int) -> int:
    """Bytes a reads job brings back: (layers, 2, 3) float64."""
    return result_bytes({"blocks": {"reads": torch.zeros(layers, 2, 3, dtype=torch.float64)}})


def blocks_bytes(lm, tokens: int, k: int | None = None, *, reads: bool = False) -> int:
    """Bytes a blocks job brings back, its reduction run on meta tensors of the captured shapes (`lm` may be
    on the meta device): the contributions, with k every part's top k both ways, and with `reads` the
    demonstration's changes in the same job (the Block writes page)."""
    H, P, V = lm.parts.layout.hidden_size, 1 + 2 * lm.num_layers, lm.vocab_size
    stack = torch.empty(P, int(tokens), H, device="meta", dtype=torch.float64)  # (P, T, H)
    normed = torch.empty(P, H, device="meta", dtype=torch.float64)
    values = shared.block_numbers(stack, normed, torch.empty(H, device="meta", dtype=torch.float64))
    values.update(bias=torch.empty((), dtype=torch.float64, device="meta"),
                  logit=torch.empty((), dtype=torch.float64, device="meta"),
                  target=torch.empty((), dtype=torch.int64, device="meta"))
    if k is not None:
        values.update(shared.top_effects(normed.float(), torch.empty(V, H, device="meta"), None, 1.0, k, V))
    out = {"blocks": {name: torch.zeros(v.shape, dtype=v.dtype) for name, v in values.items()}}
    if reads:
        out["reads"] = torch.zeros(lm.num_layers, 2, 3, dtype=torch.float64)  # (layers, 2, 3)
    return result_bytes({"blocks": out})
