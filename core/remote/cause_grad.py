"""The gradient modes of the Cause pages on a remote model, each as ONE job with a backward pass there.

What runs there is what runs here (core.cause.patching's attribution mode, core.cause.attribution's
gradient × input), reduced by the same torch-only functions, core.cause.cause_reduce (shipped by value):
- attribution patching (Nanda 2023; Syed et al. 2023): a clean trace keeps every asked site's values
  on the server, then per site one corrupted trace whose hidden_states[0] is made the graph's leaf, and
  nnsight 0.8.1's `with m.backward(inputs=[leaf]):` reads each layer's ∂m/∂a (last layer first, the
  order autograd produces them); the cell is Σ_d (a_clean − a_corrupted) · ∂m/∂a / (m_clean − m_corrupted)
  (cause_reduce.first_order). Only the (sites, layers, T) float64 grid and the metrics come back, the
  bytes of the exact mode's result (Llama-3.1-405B at 12 tokens: tests/test_remote_cause.py);
- gradient × input (Shrikumar et al. 2017): one trace, hidden_states[0] the leaf, ∂ log p(target)/∂h
  read in the backward block and reduced to Σ_d ∂ log p/∂h · h (cause_reduce.grad_x_input): (T,) back.
`inputs=[leaf]`: autograd accumulates into that leaf only, never into the weights (a deployment whose
parameters ask for gradients keeps .grad None). The job is made with grad=True, so nnsight's simulation
keeps the forward's graph (core.remote.jobs).
"""

from __future__ import annotations

import numpy as np
import torch

import core.cause.cause_reduce as shared
from core.remote.cause import _keep, _saved_bytes
from core.remote.jobs import shipping
from core.remote.lens import lens_envoys, module_path
from core.remote.model import RemoteLoadedModel


def _leaf(envoy):
    """Make `envoy`'s input (hidden_states[0]) the graph's leaf, one that asks for gradients; returns it."""
    leaf = envoy.input.detach().requires_grad_(True)
    envoy.input = leaf.clone()  # the model goes on with a copy, as the local recorder's does
    return leaf


def _site_values(envoys, resid: bool, leaf) -> list:
    """Per layer, the site's value in this trace (read in forward order; layer 0's residual is the leaf).
    The model goes on with a copy of each, as core.cause.patching's recorder does: Falcon adds into the
    MLP's output in place, which would change the kept value (and its version, for autograd)."""
    values = []
    for layer, envoy in enumerate(envoys):
        if resid and layer == 0:
            value = leaf
        elif resid:
            value = envoy.input
            envoy.input = value.clone()
        else:
            out = envoy.output
            value = shared.first(out)
            envoy.output = shared.with_first(out, value.clone())
        values.append(value)  # (1, T, H), or (T, H)
    return values


def attribution_job(lm: RemoteLoadedModel, sites: list[tuple[list[torch.nn.Module], bool]], clean_ids: list[int],
                    corrupted_ids: list[int], answer_id: int | None, foil_id: int | None) -> dict[str, np.ndarray]:
    """Attribution patching of every site of `sites` (per layer the module whose input (True) or output
    (False) is patched, that flag) in one job. Within a layer the sites must be in forward order (a clean
    trace reads them all, and nnsight serves values in the order the model makes them).

    Returns grid (sites, layers, T) float64, m (sites, 2) float64 (each site's clean and corrupted metric)
    and, where the answer or foil was None, top (2,) the clean and corrupted runs' top next tokens.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    nn, root = rm.nn, rm.nn._module
    first_block = lens_envoys(rm)[0][0]
    T = len(clean_ids)
    plans = [([nn.get(module_path(root, module)) for module in modules], resid) for modules, resid in sites]
    keep = _keep(lm, T)
    ask_top = answer_id is None or foil_id is None
    job = rm.new_job(f"attribution patching ({len(sites)} site(s) x {len(plans[0][0])} layers x {T} tokens)",
                     grad=True)

    def work():
        with nn.session(backend=rm.backend(job)):
            chosen = {"answer": answer_id, "foil": foil_id, "top": None}
            if ask_top:
                with nn.trace(torch.tensor([clean_ids, corrupted_ids]), use_cache=False, **keep):
                    top = nn.output.logits[:, -1].float().argmax(-1)  # (2,)
                    chosen["top"] = top
                    chosen["answer"] = top[0] if answer_id is None else answer_id
                    chosen["foil"] = top[1] if foil_id is None else foil_id
            with nn.trace(torch.tensor([clean_ids]), use_cache=False, **keep):  # the clean values stay here
                clean = [[] for _ in plans]
                for layer in range(len(plans[0][0])):  # forward order: layer by layer, its sites as given
                    for kept, (envoys, resid) in zip(clean, plans):
                        value = envoys[layer].input if resid else shared.first(envoys[layer].output)
                        kept.append(value.detach().clone())  # (1, T, H)
                m_clean = shared.metric(nn.output.logits[:, -1].float(), chosen["answer"], chosen["foil"])[0].detach()
            grids, baselines = [], []
            for (envoys, resid), kept in zip(plans, clean):
                with nn.trace(torch.tensor([corrupted_ids]), use_cache=False, **keep):
                    leaf = _leaf(first_block)
                    values = _site_values(envoys, resid, leaf)  # (1, T, H) each, in the graph
                    m = shared.metric(nn.output.logits[:, -1].float(), chosen["answer"], chosen["foil"])[0]
                    rows = []
                    with m.backward(inputs=[leaf]):
                        for layer in reversed(range(len(values))):  # autograd's order: the last layer first
                            rows.append(shared.first_order(kept[layer], values[layer].detach(),
                                                           values[layer].grad, T))  # (T,)
                    grids.append(torch.stack(rows[::-1]) / (m_clean - m.detach()))  # (layers, T)
                    baselines.append(torch.stack([m_clean, m.detach()]))
            values = {"grid": torch.stack(grids).cpu(), "m": torch.stack(baselines).cpu()}
            if ask_top:
                values["top"] = chosen["top"].cpu()
            result = nnsight.save(values)
        return rm.measured(job, result, "cause")

    return {name: value.numpy() for name, value in rm.run(job, work).items()}


def grad_x_input_job(lm: RemoteLoadedModel, ids: list[int], target_id: int | None) -> dict[str, np.ndarray]:
    """Gradient × input on hidden_states[0] of `ids` (T,) in one trace. Returns scores (T,) float64,
    logprob () float64 and, where target_id was None, target () the run's own top next token."""
    nnsight = shipping(shared)
    rm = lm.remote
    nn = rm.nn
    first_block = lens_envoys(rm)[0][0]
    keep = _keep(lm, len(ids))
    job = rm.new_job(f"gradient x input, {len(ids)} tokens", grad=True)

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(torch.tensor([ids]), use_cache=False, **keep):
                leaf = _leaf(first_block)
                logits = nn.output.logits[:, -1].float()  # (1, vocab)
                target = logits[0].argmax().detach() if target_id is None else target_id
                logprob = torch.log_softmax(logits, -1)[0, target]
                with logprob.backward(inputs=[leaf]):
                    scores = shared.grad_x_input(leaf.grad, leaf.detach())  # (T,)
                values = {"scores": scores.cpu(), "logprob": logprob.detach().double().cpu()}
                if target_id is None:
                    values["target"] = target.cpu()
            result = nnsight.save(values)
        return rm.measured(job, result, "cause")

    return {name: value.numpy() for name, value in rm.run(job, work).items()}


def attribution_bytes(lm, tokens: int, *, sites: int = 1, top: bool = True) -> int:
    """Bytes an attribution-patching job brings back, its reduction run on meta tensors of the captured
    shapes (each layer's (1, T, hidden) clean, corrupted and gradient); `lm` may be on the meta device."""
    T, hidden = int(tokens), lm.hidden_size
    value = torch.empty(1, T, hidden, device="meta")  # (1, T, H)
    grids, baselines = [], []
    for _ in range(sites):
        m = shared.metric(torch.empty(1, lm.vocab_size, device="meta"), 0, 1)[0]  # ()
        rows = [shared.first_order(value, value, value, T) for _ in range(lm.num_layers)]  # (T,) each
        grids.append(torch.stack(rows) / (m - m))
        baselines.append(torch.stack([m, m]))
    values = {"grid": torch.stack(grids), "m": torch.stack(baselines)}
    if top:
        values["top"] = torch.empty(2, dtype=torch.int64, device="meta")
    return _saved_bytes(values)


def grad_x_input_bytes(lm, tokens: int, *, target: bool = True) -> int:
    """Bytes a gradient × input job brings back, its reduction run on meta tensors of the captured shapes."""
    value = torch.empty(1, int(tokens), lm.hidden_size, device="meta")  # (1, T, H)
    logprob = torch.log_softmax(torch.empty(1, lm.vocab_size, device="meta"), -1)[0, 0].double()
    values = {"scores": shared.grad_x_input(value, value), "logprob": logprob}
    if target:
        values["target"] = torch.empty((), dtype=torch.int64, device="meta")
    return _saved_bytes(values)
