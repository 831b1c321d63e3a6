"""What each block writes: the residual stream taken apart, and each part's effect on the answer.

The explainer's four stages, in the model's own numbers. In a pre-norm transformer the stream before the
final norm is a sum:

    hidden_states[0] + Σ_l (attention_l + mlp_l)          # what each sub-block adds, after its own norms

so the logit of a target token can be split into one term per part (direct logit attribution, Elhage et
al. 2021, "A Mathematical Framework for Transformer Circuits"). The final norm is not linear; its scale
(1 / RMS, or 1 / standard deviation for LayerNorm) is frozen at its value in the real run, which makes it
linear, so the terms add up exactly to the model's logit before any soft-capping. A LayerNorm's and the
head's biases are one more term, "bias".

`what_blocks_read` (reads.py) shows the other half of the story: attention exchanges information between tokens,
the MLP works on each token alone. Change an earlier word, hold one later token's sub-block input at its
value in the original run, and the MLP's output there is exactly the original again, while the
attention's is not (it still reads the changed word).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

import core.cause.block_reduce as shared
from core.cause.inputs import by_position, encoded_prompt, first_token, ids_tensor, last_logits
from core.model.errors import UnsupportedArchitecture, whole_number
from core.model.hooks import hooked
from core.model.loaded import LoadedModel
from core.model.reading import execution_device, parameter_value
from core.text.tokens import display_token

FROZEN_NOTE = ("The final norm's scale is frozen at its value in the real run, so each block's effect is a "
               "straight line through the model's last steps and the effects add up to the logit.")
VOCAB_CHUNK = 16_384  # head rows multiplied at a time (float32 copies of the head stay small)


def _require_sum(lm: LoadedModel) -> None:
    parts = lm.parts
    if parts.layout.post_norm or parts.final_norm is None:
        raise UnsupportedArchitecture(
            f"{lm.name} normalises the residual stream after every block (post-norm), so it is not a sum of "
            "what each block adds and cannot be taken apart block by block.")


@dataclass(frozen=True, eq=False)
class BlockWrites:
    """One run of a prompt, taken apart: what every part added to the residual stream."""

    token_ids: np.ndarray  # (T,)
    tokens: tuple[str, ...]
    names: tuple[tuple[int, str], ...]  # (layer, block) of each part: ("embed" at 0, then attn/mlp per layer)
    parts: np.ndarray  # (parts, T, hidden) float64: what each part added, Granite's residual multiplier in it
    final_input: np.ndarray  # (T, hidden) float64: the final norm's input in the real run
    final_output: np.ndarray  # (hidden,) float64: the final norm's output at the last position
    last_logits: np.ndarray  # (vocab,) float32: the model's own logits at the last position


def block_writes(lm: LoadedModel, prompt: str) -> BlockWrites:
    """Run `prompt` once and keep hidden_states[0], every sub-block's write and the final norm's input."""
    _require_sum(lm)
    parts = lm.parts
    ids, _ = encoded_prompt(lm, prompt)
    subs = [parts.sub_blocks(layer) for layer in range(parts.num_layers)]
    kept: dict[str, list[torch.Tensor]] = {"embed": [], "final": [], "normed": []}
    outputs = {parts.final_norm: _keeper(kept["normed"])}
    for layer, sub in enumerate(subs):
        for block, module in (("attn", sub.attn_writes), ("mlp", sub.mlp_writes)):
            kept[f"{block}{layer}"] = []
            outputs[module] = _keeper(kept[f"{block}{layer}"])
    inputs = {parts.layers[0]: _keeper(kept["embed"]), parts.final_norm: _keeper(kept["final"])}
    with hooked(lm, inputs=inputs, outputs=outputs), torch.inference_mode():
        logits = last_logits(lm, ids_tensor(lm, [ids]))[0]
    names = [(0, "embed")] + [(layer, block) for layer in range(len(subs)) for block in ("attn", "mlp")]
    stacked = [kept["embed"][0]] + [kept[f"{b}{l}"][0] * subs[l].scale for l, b in names[1:]]
    return BlockWrites(
        token_ids=np.asarray(ids), tokens=tuple(display_token(lm, i) for i in ids), names=tuple(names),
        parts=torch.stack([by_position(t, len(ids))[0].double().cpu() for t in stacked]).numpy(),  # (parts, T, H)
        final_input=by_position(kept["final"][0], len(ids))[0].double().cpu().numpy(),
        final_output=by_position(kept["normed"][0], len(ids))[0, -1].double().cpu().numpy(),
        last_logits=logits.cpu().numpy())


def _keeper(kept: list):
    def keep(hidden: torch.Tensor) -> torch.Tensor:
        # A copy: Falcon adds the attention output into the MLP's output tensor in place afterwards.
        kept.append(hidden.detach().clone())
        return hidden

    return keep


# ---------------------------------------------------------------- the final norm, made linear


@dataclass(frozen=True)
class FrozenNorm:
    """The final norm with its scale frozen: y = weight * centre(x) / scale + bias (then project_out)."""

    weight: np.ndarray  # (H,) effective weight (Gemma's RMSNorm multiplies by 1 + weight; found by probing)
    bias: np.ndarray | None  # (H,) LayerNorm's bias, or None
    centred: bool  # LayerNorm subtracts the mean first; RMSNorm does not
    scale: float  # sqrt(mean(x²) + eps), or sqrt(var(x) + eps), of the real run's last position

    def apply(self, x: np.ndarray) -> np.ndarray:  # (..., H) -> (..., H), without the bias
        return shared.frozen_apply(torch.from_numpy(x), torch.from_numpy(self.weight), self.centred,
                                   torch.tensor(self.scale, dtype=torch.float64)).numpy()


def _eps(norm: torch.nn.Module) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 1e-5


def frozen_final_norm(lm: LoadedModel, x_last: np.ndarray, y_last: np.ndarray) -> FrozenNorm:
    """The final norm as a linear map at the real run's last position (its input `x_last` and output `y_last`, (H,))."""
    norm = lm.parts.final_norm
    centred = lm.parts.layout.norm != "RMSNorm"
    eps = _eps(norm)
    # parameter_value: the real numbers also where accelerate offloaded the norm (meta on the module)
    weight = parameter_value(norm) if getattr(norm, "weight", None) is not None else None
    bias = parameter_value(norm, "bias") if getattr(norm, "bias", None) is not None else None
    x, y = torch.from_numpy(x_last), torch.from_numpy(y_last)
    scale = shared.frozen_scale(x, centred, eps)
    effective = shared.effective_weight(None if weight is None else weight.cpu(), x, y,
                                        None if bias is None else bias.cpu(), centred, scale)
    return FrozenNorm(weight=effective.numpy(), bias=None if bias is None else bias.double().cpu().numpy(),
                      centred=centred, scale=float(scale))


def _project_out(lm: LoadedModel) -> torch.Tensor | None:
    project_out = lm.parts.project_out
    return None if project_out is None else parameter_value(project_out).cpu()


def _head_rows(lm: LoadedModel, token_ids) -> np.ndarray:
    """(len(token_ids), H) float64: the rows of head × project_out × logit multiplier for these tokens."""
    return shared.head_rows(parameter_value(lm.parts.lm_head).cpu(), list(token_ids), _project_out(lm),
                            lm.parts.layout.logit_multiplier or 1.0).numpy()


def _bias_term(lm: LoadedModel, frozen: FrozenNorm, target_id: int) -> float | None:
    head = lm.parts.lm_head
    head_bias = parameter_value(head, "bias").cpu() if getattr(head, "bias", None) is not None else None
    if frozen.bias is None and head_bias is None:
        return None
    direction = torch.from_numpy(_head_rows(lm, [target_id])[0])
    return float(shared.bias_term(direction, None if frozen.bias is None else torch.from_numpy(frozen.bias),
                                  head_bias, target_id, lm.parts.layout.logit_multiplier or 1.0))


def effect_rows(lm: LoadedModel, names, top: dict[str, np.ndarray]) -> list[tuple]:
    """block_token_effects's rows from top_effects's (parts, k) ids and effects."""
    rows = []
    for part, (layer, name) in enumerate(names):
        for direction, ids, values in (("promotes", top["up_ids"], top["up"]), ("suppresses", top["down_ids"], top["down"])):
            for rank, (token_id, value) in enumerate(zip(ids[part], values[part]), start=1):
                rows.append((layer, name, direction, rank, int(token_id), display_token(lm, int(token_id)), float(value)))
    return rows


# ---------------------------------------------------------------- the public functions


def block_contributions(lm: LoadedModel, prompt: str, *, target: str | None = None) -> pd.DataFrame:
    """What each block adds to the residual stream, and its direct effect on the target's logit.

    Columns layer, block ("embed" at layer 0; "attn" / "mlp" at layer l = block l; "bias" at layer L where
    the final norm or the head has a bias), position, token, norm (L2 size of what it adds at that token),
    logit_effect (at the last position only; NaN elsewhere). The last position's logit effects sum to the
    model's own logit for the target before any soft-capping (attrs["logit"]). `target`: a string meaning
    its first token; default the model's own top next token. attrs: model, target, target_id, logit, notes.
    """
    notes, target_id = _target(lm, target)
    if getattr(lm, "remote", None) is not None:
        names, tokens, got, _ = _remote_blocks(lm, prompt, target_id)
        return _remote_contributions(lm, names, tokens, got, target_id, notes)
    writes = block_writes(lm, prompt)
    target_id = int(writes.last_logits.argmax()) if target_id is None else target_id
    frozen = frozen_final_norm(lm, writes.final_input[-1], writes.final_output)
    direction = torch.from_numpy(_head_rows(lm, [target_id])[0])  # (H,)
    numbers = shared.block_numbers(torch.from_numpy(writes.parts),
                                   torch.from_numpy(frozen.apply(writes.parts[:, -1])), direction)
    return _contribution_table(lm, writes.names, writes.tokens, numbers["norm"].numpy(),
                               numbers["logit_effect"].numpy(), _bias_term(lm, frozen, target_id), target_id,
                               _own_logit(lm, writes.final_input[-1:], target_id), notes, target is None)


def _target(lm: LoadedModel, target: str | None) -> tuple[list[str], int | None]:
    notes = [FROZEN_NOTE]
    if target is None:
        return notes, None
    target_id, note = first_token(lm, target, "target")
    return notes + ([note] if note else []), target_id


def _remote_contributions(lm, names, tokens, got: dict, target_id: int | None, notes: list[str]) -> pd.DataFrame:
    bias = float(got["bias"]) if _has_bias(lm) else None
    own = target_id is None
    target_id = int(got["target"]) if own else target_id
    return _contribution_table(lm, names, tokens, got["norm"], got["logit_effect"], bias, target_id,
                               float(got["logit"]), notes, own)


def _contribution_table(lm, names, tokens, sizes, effects, bias, target_id, logit, notes, own) -> pd.DataFrame:
    """block_contributions's table from the per-part sizes (P, T) and last-position effects (P,)."""
    if own:
        notes = notes + [f"The target is {lm.name}'s own top next token, {display_token(lm, target_id)!r}."]
    T = len(tokens)
    rows = []
    for (layer, block), size, effect in zip(names, sizes, effects):
        for position in range(T):
            rows.append((layer, block, position, tokens[position], size[position],
                         effect if position == T - 1 else np.nan))
    if bias is not None:
        rows.append((lm.num_layers, "bias", T - 1, tokens[-1], np.nan, bias))
    table = pd.DataFrame(rows, columns=["layer", "block", "position", "token", "norm", "logit_effect"])
    table.attrs.update(model=lm.name, target=display_token(lm, target_id), target_id=target_id, logit=logit,
                       notes=notes, num_layers=lm.num_layers)
    return table


def _own_logit(lm: LoadedModel, x_last: np.ndarray, target_id: int) -> float:
    """The model's own pre-soft-cap logit: its final norm and head on the real run's stream (x_last (1, H))."""
    with torch.inference_mode():
        head = lm.parts.lm_head
        x = torch.from_numpy(x_last).to(device=execution_device(lm.parts.final_norm), dtype=parameter_value(head).dtype)
        logit = head(lm.parts.finish(x[None]))[0, 0, target_id].double()
    return float(logit) * (lm.parts.layout.logit_multiplier or 1.0)


def _has_bias(lm: LoadedModel) -> bool:
    parts = lm.parts
    return getattr(parts.final_norm, "bias", None) is not None or getattr(parts.lm_head, "bias", None) is not None


def _names(lm: LoadedModel) -> tuple[tuple[int, str], ...]:
    return ((0, "embed"),) + tuple((layer, block) for layer in range(lm.num_layers) for block in ("attn", "mlp"))


def _remote_blocks(lm: LoadedModel, prompt: str, target_id: int | None, k: int | None = None,
                   reads: dict | None = None):
    """A remote model's run taken apart as one job (core.remote.cause_blocks): (part names, tokens, its numbers,
    and the demonstration's changes when `reads` (core.cause.reads.reads_plan's ids) rides along, else None)."""
    from core.remote.cause_blocks import block_writes_job

    _require_sum(lm)
    ids, _ = encoded_prompt(lm, prompt)
    asked = {"ids": ids, "target_id": target_id, "eps": _eps(lm.parts.final_norm), "k": k, "chunk": VOCAB_CHUNK}
    got = block_writes_job(lm, blocks=asked, reads=reads)
    return _names(lm), tuple(display_token(lm, i) for i in ids), got["blocks"], got["reads"]


def block_token_effects(lm: LoadedModel, prompt: str, *, k: int = 10) -> pd.DataFrame:
    """The k tokens whose logit each part's write raises most, and the k it lowers most, at the last position.

    Columns layer, block, direction ("promotes" / "suppresses"), rank (1 = strongest), token_id, token,
    logit_effect (the same direct effect as block_contributions gives for that token as target).
    """
    k = whole_number(k)
    if k is None or k < 1:
        raise ValueError("k must be a whole number of at least 1.")
    if getattr(lm, "remote", None) is not None:
        names, _, top, _ = _remote_blocks(lm, prompt, None, min(k, lm.vocab_size))
        rows = effect_rows(lm, names, top)  # the contributions of the same run are left unread
    else:
        writes = block_writes(lm, prompt)
        frozen = frozen_final_norm(lm, writes.final_input[-1], writes.final_output)
        normed = torch.from_numpy(frozen.apply(writes.parts[:, -1]).astype(np.float32))  # (parts, H)
        head = parameter_value(lm.parts.lm_head)  # (V, H'), read from RAM or disk where offloaded
        top = shared.top_effects(normed, head, _project_out(lm), lm.parts.layout.logit_multiplier or 1.0,
                                 min(k, head.shape[0]), VOCAB_CHUNK)
        rows = effect_rows(lm, writes.names, {name: value.cpu().numpy() for name, value in top.items()})
    table = pd.DataFrame(rows, columns=["layer", "block", "direction", "rank", "token_id", "token", "logit_effect"])
    table.attrs.update(model=lm.name, notes=[FROZEN_NOTE])
    return table


def block_page(lm: LoadedModel, prompt: str, *, target: str | None = None, k: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the Block writes page shows of one prompt: (block_contributions, block_token_effects). A remote
    model computes both from ONE run, in one job; a local one runs each as before."""
    if getattr(lm, "remote", None) is None:
        return block_contributions(lm, prompt, target=target), block_token_effects(lm, prompt, k=k)
    return remote_block_page(lm, prompt, target=target, k=k)[:2]


def remote_block_page(lm: LoadedModel, prompt: str, *, target: str | None = None, k: int = 10,
                      reads: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """block_page of a remote model in one job, with the demonstration's runs (`reads`) in the same job when
    given: (contributions, token effects, the demonstration's (layers, 2, 3) changes or None)."""
    k = whole_number(k)
    if k is None or k < 1:
        raise ValueError("k must be a whole number of at least 1.")
    notes, target_id = _target(lm, target)
    names, tokens, got, changes = _remote_blocks(lm, prompt, target_id, min(k, lm.vocab_size), reads)
    effects = pd.DataFrame(effect_rows(lm, names, got),
                           columns=["layer", "block", "direction", "rank", "token_id", "token", "logit_effect"])
    effects.attrs.update(model=lm.name, notes=[FROZEN_NOTE])
    return _remote_contributions(lm, names, tokens, got, target_id, notes), effects, changes
