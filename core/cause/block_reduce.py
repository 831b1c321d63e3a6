"""Direct logit attribution's arithmetic, torch only: run by core.cause.blocks here and inside a remote trace.

Why torch only and a module of its own: a remote model (core.remote.cause_blocks) takes the residual
stream apart where it runs (NDIF's GPUs), and a function called inside a remote trace is shipped to
the server by value (`nnsight.register(this module)`), so it may use torch and nothing else of ours.
The local path calls the same functions on the parts its hooks kept: one description of the frozen
final norm, the head rows and the per-block numbers (Elhage et al. 2021, direct logit attribution).

Conventions: parts (P, T, H) float64 are what each part added to the residual stream (hidden_states[0],
then each block's attention and MLP write, Granite's residual multiplier in it); the final norm's scale
is frozen at its value at the real run's last position, which makes it linear:
    y = weight · centre(x) / scale (+ bias),  scale = sqrt(mean(centre(x)²) + eps).
"""

from __future__ import annotations

import torch


def centre(x: torch.Tensor, centred: bool) -> torch.Tensor:
    """x minus its mean over the last axis (LayerNorm), or x itself (RMSNorm)."""
    return x - x.mean(-1, keepdim=True) if centred else x


def row0(output, length: int) -> torch.Tensor:
    """A sub-block's write in the first row as a float64 copy: output (1, T, H), (T, H) or a tuple -> (T, H)."""
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    return hidden.reshape(-1, length, hidden.shape[-1])[0].to(torch.float64, copy=True)


def first(output):
    """A module's output as a tensor: its first element when it returns a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def at_position(hidden: torch.Tensor, position: int, length: int) -> torch.Tensor:
    """One token's vector in the first row as a float64 copy: hidden (1, T, H) or (T, H) -> (H,)."""
    return hidden.reshape(-1, length, hidden.shape[-1])[0, position].to(torch.float64, copy=True)


def put_at(hidden: torch.Tensor, position: int, length: int, value: torch.Tensor) -> torch.Tensor:
    """A copy of `hidden` with the first row's vector at `position` set to `value` (H,) (what_blocks_read's hold)."""
    hidden = hidden.clone()
    hidden.view(-1, length, hidden.shape[-1])[0, position] = value.to(device=hidden.device, dtype=hidden.dtype)
    return hidden


def frozen_scale(x_last: torch.Tensor, centred: bool, eps: float) -> torch.Tensor:
    """The final norm's divisor at the real run's last position: x_last (H,) -> () float64."""
    x = centre(x_last.double(), centred)
    return torch.sqrt((x ** 2).mean() + eps)


def frozen_apply(x: torch.Tensor, weight: torch.Tensor, centred: bool, scale: torch.Tensor) -> torch.Tensor:
    """The frozen final norm without its bias: (..., H) -> (..., H) float64 (weight: the effective one)."""
    return centre(x.double(), centred) * weight.double() / scale


def effective_weight(raw: torch.Tensor | None, x_last: torch.Tensor, y_last: torch.Tensor, bias: torch.Tensor | None,
                     centred: bool, scale: torch.Tensor) -> torch.Tensor:
    """The weight the final norm really multiplies by, w or 1 + w (Gemma's RMSNorm): whichever reproduces its
    own output `y_last` at the real run's last position from its input `x_last`. (H,) float64."""
    base = centre(x_last.double(), centred) / scale  # (H,)
    raw = torch.ones_like(base) if raw is None else raw.double().to(base.device)
    offset = 0 if bias is None else bias.double().to(base.device)
    miss = [((base * w + offset) - y_last.double()).abs().max() for w in (raw, 1 + raw)]
    return torch.where(miss[0] <= miss[1], raw, 1 + raw)


def head_rows(head_weight: torch.Tensor, token_ids, project_out: torch.Tensor | None, multiplier: float) -> torch.Tensor:
    """(n, H) float64: the rows of head × project_out × logit multiplier for these tokens."""
    rows = head_weight[token_ids].double()  # (n, H')
    if project_out is not None:  # OPT: hidden -> word-vector width, no bias
        rows = rows @ project_out.double()
    return rows * multiplier


def block_numbers(parts: torch.Tensor, normed_last: torch.Tensor, direction: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the page shows per part: the size of every write (P, T) and the direct effect on one token (P,)."""
    return {"norm": parts.norm(dim=-1), "logit_effect": normed_last @ direction}


def bias_term(direction: torch.Tensor, norm_bias: torch.Tensor | None, head_bias: torch.Tensor | None, target_id,
              multiplier: float) -> torch.Tensor:
    """The final norm's and the head's biases as one more term of the target's logit: () float64."""
    value = torch.zeros((), dtype=torch.float64, device=direction.device)
    if norm_bias is not None:
        value = value + direction @ norm_bias.double()
    if head_bias is not None:
        value = value + head_bias[target_id].double() * multiplier
    return value


def top_effects(normed: torch.Tensor, head_weight: torch.Tensor, project_out: torch.Tensor | None,
                multiplier: float, k: int, chunk: int) -> dict[str, torch.Tensor]:
    """The k tokens whose logit each part's (normed) write raises most and lowers most, over the whole head.

    normed (P, H) float32; the head is multiplied `chunk` rows at a time (float32 copies stay small).
    Returns up_ids, up (P, k) by descending effect and down_ids, down (P, k) by ascending effect.
    """
    normed = normed.float()
    if project_out is not None:
        normed = normed @ project_out.float().T  # (P, H')
    vocab = head_weight.shape[0]
    effects = torch.empty(normed.shape[0], vocab, dtype=torch.float32, device=normed.device)  # (P, V)
    for start in range(0, vocab, chunk):
        block = head_weight[start:start + chunk].float().to(normed.device)  # (chunk, H')
        effects[:, start:start + chunk] = normed @ block.T
    effects *= multiplier
    up, up_ids = torch.topk(effects, k, dim=-1)
    down, down_ids = torch.topk(effects, k, dim=-1, largest=False)
    return {"up_ids": up_ids, "up": up, "down_ids": down_ids, "down": down}


def read_changes(original: dict, altered: dict, held: dict, layers: int) -> torch.Tensor:
    """what_blocks_read's numbers from three runs' kept vectors ({(layer, block, "in"/"out"): [(H,)]}):
    (layers, 2 blocks attn/mlp, 3) float64 = input change, output change, output change with the input held."""
    def change(run, layer, block, kind):
        return (run[layer, block, kind][0] - original[layer, block, kind][0]).norm()

    return torch.stack([torch.stack([torch.stack([change(altered, layer, block, "in"), change(altered, layer, block, "out"),
                                                  change(held, layer, block, "out")]) for block in ("attn", "mlp")])
                        for layer in range(layers)])
