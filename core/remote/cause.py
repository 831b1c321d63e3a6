"""Activation patching and occlusion of a remote model, each as ONE job: patched and reduced where it runs.

What runs there is what runs here (core.cause.patching, core.cause.attribution), from one description,
core.cause.cause_reduce (shipped by value, nnsight.register):
- exact patching: the grid's cells of every site asked (the page's "All three": one job) in batches of MAX_ROWS_PER_FORWARD patched rows (cell_chunks), one
  trace per batch in one session; each batch carries the clean run in row 0 and the corrupted run in
  row 1, and a patched row copies its value from row 0 at the same site, so the clean states never
  leave the server. Only the (sites, layers, T) float64 score grids and each site's two baseline metrics
  come back (Llama-3.1-405B at 12 tokens: one site 14,113 bytes, all three 38,305: tests/test_remote_cause.py);
- occlusion: the prompt in row 0, row i + 1 with hidden_states[0] zeroed at position i; only the (T,)
  drops and the real run's log p(target) come back.
Where the answer, foil or target is not given, the model's own top tokens are found in a first trace
of the same session (the batch the local path runs for them) and come back as two ids.
The gradient modes (attribution patching, gradient × input), with their backward pass: core.remote.cause_grad.
"""

from __future__ import annotations

import numpy as np
import torch

import core.cause.cause_reduce as shared
from core.remote.jobs import result_bytes, shipping
from core.remote.lens import lens_envoys, module_path
from core.remote.model import RemoteLoadedModel
from core.running.trace import last_logits_only

def _keep(lm, length: int) -> dict:
    """The head on the last row only, as the local path runs it (the index made here: a meta model's is on meta)."""
    return {name: torch.tensor([length - 1]) for name in last_logits_only(lm, length)}


def patching_job(lm: RemoteLoadedModel, sites: list[tuple[list[torch.nn.Module], bool]], clean_ids: list[int],
                 corrupted_ids: list[int], answer_id: int | None, foil_id: int | None,
                 rows_per_forward: int) -> dict[str, np.ndarray]:
    """Exact patching of every site of `sites` in one job. A site: (per layer, the module whose input
    (True: "resid") or output (False) is patched, that flag).

    Returns grid (sites, layers, T) float64, m (sites, 2) float64 (each site's clean and corrupted metric)
    and, where the answer or foil was None, top (2,) the clean and corrupted runs' top next tokens.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    nn, root = rm.nn, rm.nn._module
    T = len(clean_ids)
    plans = []
    for modules, resid in sites:
        envoys = [nn.get(module_path(root, module)) for module in modules]
        chunks = shared.cell_chunks(len(envoys), T, rows_per_forward)
        edits = [[(envoys[layer], torch.tensor(rows), torch.tensor(positions))
                  for layer, (rows, positions) in chunk.items()] for chunk in chunks]  # in forward order
        batches = [torch.tensor([clean_ids] + [corrupted_ids] * (shared.chunk_rows(c) - 1)) for c in chunks]  # (rows, T)
        plans.append((resid, list(zip(batches, edits)), (len(envoys), T)))
    pair = torch.tensor([clean_ids, corrupted_ids])  # (2, T)
    keep = _keep(lm, T)
    ask_top = answer_id is None or foil_id is None
    traces = sum(len(plan) for _, plan, _ in plans)
    job = rm.new_job(f"activation patching ({len(sites)} site(s) x {plans[0][2][0]} layers x {T} tokens, "
                     f"{traces} batches)")

    def work():
        with nn.session(backend=rm.backend(job)):
            chosen = {"answer": answer_id, "foil": foil_id, "top": None}
            if ask_top:
                with nn.trace(pair, use_cache=False, **keep):
                    top = nn.output.logits[:, -1].float().argmax(-1)  # (2,)
                    chosen["top"] = top
                    chosen["answer"] = top[0] if answer_id is None else answer_id
                    chosen["foil"] = top[1] if foil_id is None else foil_id
            grids, baselines = [], []
            for resid, plan, shape in plans:
                scores = []
                for batch, edits in plan:
                    with nn.trace(batch, use_cache=False, **keep):
                        for site, rows, positions in edits:
                            if resid:
                                site.input = shared.copy_from_clean(site.input, rows, positions, T)
                            else:
                                out = site.output
                                site.output = shared.with_first(
                                    out, shared.copy_from_clean(shared.first(out), rows, positions, T))
                        m = shared.metric(nn.output.logits[:, -1].float(), chosen["answer"], chosen["foil"])  # (rows,)
                        scores.append(shared.patch_scores(m))
                        if len(scores) == 1:
                            baselines.append(m[:2])
                grids.append(torch.cat(scores).reshape(shape))
            values = {"grid": torch.stack(grids).cpu(), "m": torch.stack(baselines).cpu()}  # fresh: no whole storage
            if ask_top:
                values["top"] = chosen["top"].cpu()
            result = nnsight.save(values)
        return rm.measured(job, result, "cause")

    return {name: value.numpy() for name, value in rm.run(job, work).items()}


def occlusion_job(lm: RemoteLoadedModel, ids: list[int], target_id: int | None,
                  rows_per_forward: int) -> dict[str, np.ndarray]:
    """Occlusion of every position of `ids` (T,). Returns scores (T,) float64, logprob () float64 and, where
    target_id was None, target () the real run's top next token."""
    nnsight = shipping(shared)
    rm = lm.remote
    nn = rm.nn
    first_block = lens_envoys(rm)[0][0]
    T = len(ids)
    chunks = [list(range(start, min(start + rows_per_forward, T))) for start in range(0, T, rows_per_forward)]
    plan = [(torch.tensor([[*ids]] * (len(c) + 1)), torch.arange(1, len(c) + 1), torch.tensor(c)) for c in chunks]
    keep = _keep(lm, T)
    job = rm.new_job(f"occlusion, {T} tokens")

    def work():
        with nn.session(backend=rm.backend(job)):
            chosen = {"target": target_id}
            if target_id is None:
                with nn.trace(torch.tensor([ids]), use_cache=False, **keep):
                    chosen["target"] = nn.output.logits[0, -1].float().argmax()  # ()
            drops, base = [], []
            for batch, rows, positions in plan:
                with nn.trace(batch, use_cache=False, **keep):
                    first_block.input = shared.zero_rows(first_block.input, rows, positions)
                    logprob = shared.target_logprob(nn.output.logits[:, -1], chosen["target"])  # (rows,)
                    drops.append(logprob[0] - logprob[1:])
                    base.append(logprob[0].clone())
            values = {"scores": torch.cat(drops).cpu(), "logprob": base[0].cpu()}
            if target_id is None:
                values["target"] = chosen["target"].cpu()
            result = nnsight.save(values)
        return rm.measured(job, result, "cause")

    return {name: value.numpy() for name, value in rm.run(job, work).items()}


def _saved_bytes(values: dict[str, torch.Tensor]) -> int:
    """torch.save bytes of meta tensors as a job saves them, measured on zeros of the same shapes."""
    return result_bytes({"cause": {name: torch.zeros(v.shape, dtype=v.dtype) for name, v in values.items()}})


def patching_bytes(lm, tokens: int, rows_per_forward: int, *, sites: int = 1, top: bool = True) -> int:
    """Bytes a patching job of `sites` sites brings back, its reduction run on meta tensors of the captured
    shapes (each batch's last logits, (rows, vocab)); `lm` may be on the meta device."""
    grids, baselines = [], []
    for _ in range(sites):
        scores = []
        for chunk in shared.cell_chunks(lm.num_layers, int(tokens), rows_per_forward):
            m = shared.metric(torch.empty(shared.chunk_rows(chunk), lm.vocab_size, device="meta"), 0, 1)  # (rows,)
            scores.append(shared.patch_scores(m))
            if len(scores) == 1:
                baselines.append(m[:2])
        grids.append(torch.cat(scores).reshape(lm.num_layers, int(tokens)))
    values = {"grid": torch.stack(grids), "m": torch.stack(baselines)}
    if top:
        values["top"] = torch.empty(2, dtype=torch.int64, device="meta")
    return _saved_bytes(values)


def occlusion_bytes(lm, tokens: int, rows_per_forward: int, *, target: bool = True) -> int:
    """Bytes an occlusion job brings back, its reduction run on meta tensors of the captured shapes."""
    drops, base = [], None
    for start in range(0, int(tokens), rows_per_forward):
        rows = min(rows_per_forward, int(tokens) - start) + 1
        logprob = shared.target_logprob(torch.empty(rows, lm.vocab_size, device="meta"), 0)  # (rows,)
        drops.append(logprob[0] - logprob[1:])
        base = logprob[0] if base is None else base
    values = {"scores": torch.cat(drops), "logprob": base}
    if target:
        values["target"] = torch.empty((), dtype=torch.int64, device="meta")
    return _saved_bytes(values)
