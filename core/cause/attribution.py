"""Which input tokens drove the prediction: one score per input token, in nats of log p(target).

Two methods, both on hidden_states[0] (the embedding output, with Gemma's sqrt(hidden) scaling and GPT-2's
position embeddings already in it; core/model/parts.py):
- occlusion (Zeiler & Fergus 2014, applied to tokens): log p(target) − log p(target) when that position's
  hidden_states[0] is set to zero. All positions run as one batch, row i zeroed at position i.
- gradient × input (Shrikumar et al. 2017, "Learning Important Features Through Propagating Activation
  Differences"): Σ over hidden dims of ∂ log p(target) / ∂ hidden_states[0] × hidden_states[0], from one
  forward and one backward.
Positive: the token pushed the model towards the target; negative: away from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import core.cause.cause_reduce as shared
from core.cause.inputs import encoded_prompt, first_token, ids_tensor, last_logits
from core.model.hooks import hooked
from core.model.loaded import LoadedModel
from core.text.tokens import display_token

ATTRIBUTION_METHODS = ("occlusion", "grad_x_input")
ROWS_PER_FORWARD = 64


def _target(lm: LoadedModel, ids: list[int], target: str | None) -> tuple[int, list[str]]:
    if target is not None:
        target_id, note = first_token(lm, target, "target")
        return target_id, [note] if note else []
    with hooked(lm), torch.inference_mode():
        target_id = int(last_logits(lm, ids_tensor(lm, [ids]))[0].argmax())
    return target_id, [f"The target is {lm.name}'s own top next token, {display_token(lm, target_id)!r}."]


def _zero_rows(first_row: int, positions: list[int]):
    """hidden_states[0][first_row + i, positions[i]] = 0 for every i."""
    rows = torch.arange(first_row, first_row + len(positions))
    columns = torch.tensor(positions)
    return lambda hidden: shared.zero_rows(hidden, rows, columns)  # (batch, T, hidden)


def _occlusion(lm: LoadedModel, ids: list[int], target_id: int) -> tuple[np.ndarray, float]:
    positions = list(range(len(ids)))
    drops, base = np.empty(len(ids)), None
    for start in range(0, len(ids), ROWS_PER_FORWARD):
        chunk = positions[start:start + ROWS_PER_FORWARD]
        batch = ids_tensor(lm, [ids] * (len(chunk) + 1))  # row 0: the real run
        with hooked(lm, inputs={lm.parts.layers[0]: _zero_rows(1, chunk)}), torch.inference_mode():
            logprob = shared.target_logprob(last_logits(lm, batch), target_id).cpu()  # (batch,)
        base = float(logprob[0]) if base is None else base
        drops[start:start + len(chunk)] = (logprob[0] - logprob[1:]).numpy()
    return drops, base


def _grad_x_input(lm: LoadedModel, ids: list[int], target_id: int) -> tuple[np.ndarray, float]:
    kept: list[torch.Tensor] = []

    def leaf(hidden: torch.Tensor) -> torch.Tensor:  # the graph starts at hidden_states[0]
        hidden = hidden.detach().requires_grad_(True)
        kept.append(hidden)
        return hidden

    with hooked(lm, inputs={lm.parts.layers[0]: leaf}), torch.enable_grad():
        logprob = torch.log_softmax(last_logits(lm, ids_tensor(lm, [ids])), -1)[0, target_id]
        (grad,) = torch.autograd.grad(logprob, kept[0])
    scores = shared.grad_x_input(grad, kept[0].detach())  # (T,)
    return scores.cpu().numpy(), float(logprob.detach())


def _remote_scores(lm: LoadedModel, ids: list[int], target: str | None, method: str):
    """Either method on a remote model as one job: occlusion (core.remote.cause: the same rows, edit and
    log-probabilities) or gradient × input (core.remote.cause_grad: the same leaf, backward and reduction)."""
    from core.remote.cause import occlusion_job
    from core.remote.cause_grad import grad_x_input_job

    notes: list[str] = []
    target_id = None
    if target is not None:
        target_id, note = first_token(lm, target, "target")
        notes += [note] if note else []
    if method == "occlusion":
        got = occlusion_job(lm, ids, target_id, ROWS_PER_FORWARD)
    else:
        got = grad_x_input_job(lm, ids, target_id)
    if target_id is None:
        target_id = int(got["target"])
        notes.append(f"The target is {lm.name}'s own top next token, {display_token(lm, target_id)!r}.")
    return got["scores"], float(got["logprob"]), target_id, notes


def token_attribution(lm: LoadedModel, prompt: str, *, target: str | None = None,
                      method: str = "occlusion") -> pd.DataFrame:
    """One score per input token for the prediction of `target` at the last position, in nats.

    Columns position, token, start, end (the token's characters in `prompt`; 0, 0 for BOS), score.
    `target`: a string meaning its first token (default: the model's own top next token).
    method "occlusion": log p(target) − log p(target with hidden_states[0][position] set to 0);
    "grad_x_input": Σ_d ∂ log p(target)/∂ hidden_states[0] × hidden_states[0].
    attrs: model, method, target, target_id, logprob (of the real run), notes.
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"Unknown method {method!r}: choose 'occlusion' or 'grad_x_input'.")
    ids, offsets = encoded_prompt(lm, prompt)
    if getattr(lm, "remote", None) is not None:
        scores, logprob, target_id, notes = _remote_scores(lm, ids, target, method)
    else:
        target_id, notes = _target(lm, ids, target)
        scores, logprob = (_occlusion if method == "occlusion" else _grad_x_input)(lm, ids, target_id)
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    table = pd.DataFrame({"position": np.arange(len(ids)), "token": [display_token(lm, i) for i in ids],
                          "start": spans[:, 0], "end": spans[:, 1], "score": scores})
    table.attrs.update(model=lm.name, method=method, target=display_token(lm, target_id), target_id=target_id,
                       logprob=logprob, notes=notes)
    return table
