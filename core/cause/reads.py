"""Attention exchanges information between tokens; the MLP works on each token alone. A demonstration.

Take a prompt and a copy with one earlier word changed (the same number of tokens). At a later token t,
every sub-block's input and output change, because the changed word reaches t through attention. Then
run the changed prompt once more, but at every layer give each sub-block, at token t only, the input it
had in the original run:
- the MLP's output at t is then exactly the original one: it reads nothing but its own input at t;
- the attention's output at t still differs: its keys and values come from the other tokens, and one of
  them is the changed word.
"""

from __future__ import annotations

import pandas as pd
import torch

import core.cause.block_reduce as shared
from core.cause.inputs import encoded_prompt, ids_tensor, last_logits
from core.model.errors import whole_number
from core.model.hooks import hooked
from core.model.loaded import LoadedModel
from core.text.tokens import display_token


def _at(position: int, length: int, kept: list, replace: list | None = None):
    """An edit that keeps hidden[0, position]; with `replace`, first sets it to replace[0]."""
    def edit(hidden: torch.Tensor) -> torch.Tensor:  # (1, T, hidden), or (T, hidden) in OPT's MLP
        if replace is not None:
            hidden = shared.put_at(hidden, position, length, replace[0])
        kept.append(shared.at_position(hidden.detach(), position, length).cpu())
        return hidden

    return edit


def _run(lm: LoadedModel, ids: list[int], position: int, held: dict | None = None) -> dict:
    """Inputs and outputs of every sub-block at `position`; with `held`, the inputs are set to held's."""
    subs = [lm.parts.sub_blocks(layer) for layer in range(lm.num_layers)]
    seen: dict = {}
    inputs, outputs = {}, {}
    for layer, sub in enumerate(subs):
        for block, reads, writes in (("attn", sub.attn_reads, sub.attn_writes), ("mlp", sub.mlp_reads, sub.mlp_writes)):
            seen[layer, block, "in"], seen[layer, block, "out"] = [], []
            replace = None if held is None else held[layer, block, "in"]
            inputs[reads] = _at(position, len(ids), seen[layer, block, "in"], replace)
            outputs[writes] = _at(position, len(ids), seen[layer, block, "out"])
    with hooked(lm, inputs=inputs, outputs=outputs), torch.inference_mode():
        last_logits(lm, ids_tensor(lm, [ids]))
    return seen


def what_blocks_read(lm: LoadedModel, prompt: str, changed_prompt: str, *, position: int | None = None) -> pd.DataFrame:
    """How each sub-block's input and output at a later token change when an earlier word changes.

    Columns layer, block ("attn" / "mlp"), input_change, output_change (L2 norms of the change at the token,
    changed run minus original run) and held_output_change: the change of the output when, at that token
    and at every layer, the sub-block is given its input from the original run (exactly 0 for the MLP).
    `position`: the later token (default: the last); it must come after the first changed token.
    attrs: model, position, token, changed_positions.
    """
    plan = reads_plan(lm, prompt, changed_prompt, position)
    ids, changed_ids, position = plan["ids"], plan["changed_ids"], plan["position"]
    if getattr(lm, "remote", None) is not None:  # the three runs in one job (core.remote.cause_blocks)
        from core.remote.cause_blocks import reads_job

        changes = reads_job(lm, ids, changed_ids, position)  # (layers, 2, 3)
    else:
        original = _run(lm, ids, position)
        altered = _run(lm, changed_ids, position)
        held = _run(lm, changed_ids, position, held=original)
        changes = shared.read_changes(original, altered, held, lm.num_layers).numpy()
    return reads_table(lm, plan, changes)


def reads_plan(lm: LoadedModel, prompt: str, changed_prompt: str, position: int | None = None) -> dict:
    """The demonstration's checked inputs: {"ids", "changed_ids", "position", "changed"} (ValueError if unfit)."""
    ids, _ = encoded_prompt(lm, prompt)
    changed_ids, _ = encoded_prompt(lm, changed_prompt, "changed prompt")
    if len(ids) != len(changed_ids):
        raise ValueError(f"In {lm.name} the prompt is {len(ids)} tokens and the changed prompt "
                         f"{len(changed_ids)}: change one word for another of the same token count.")
    changed = [p for p, (a, b) in enumerate(zip(ids, changed_ids)) if a != b]
    if not changed:
        raise ValueError(f"The two prompts are the same tokens in {lm.name}: change an earlier word.")
    position = len(ids) - 1 if position is None else whole_number(position)
    if position is None or not changed[0] < position < len(ids):
        raise ValueError(f"Choose a token after the first changed one (position {changed[0] + 1} … "
                         f"{len(ids) - 1}).")
    return {"ids": ids, "changed_ids": changed_ids, "position": position, "changed": changed}


def reads_table(lm: LoadedModel, plan: dict, changes) -> pd.DataFrame:
    """what_blocks_read's table from the (layers, 2, 3) changes of reads_plan's runs."""
    rows = [(layer, block, *map(float, changes[layer, b])) for layer in range(lm.num_layers)
            for b, block in enumerate(("attn", "mlp"))]
    table = pd.DataFrame(rows, columns=["layer", "block", "input_change", "output_change", "held_output_change"])
    table.attrs.update(model=lm.name, position=plan["position"], token=display_token(lm, plan["ids"][plan["position"]]),
                       changed_positions=plan["changed"], num_layers=lm.num_layers)
    return table


def block_writes_page(lm: LoadedModel, prompt: str, original: str, changed_prompt: str, *, target: str | None = None,
                      k: int = 10):
    """Everything the Block writes page shows: (contributions, token effects, the demonstration's table or its
    ValueError). A remote model runs all of it as ONE job (one queue wait for the page); a local one as before.
    The demonstration's own bad input is its own message: the rest of the page still comes back."""
    from core.cause.blocks import block_page, remote_block_page

    try:
        plan = reads_plan(lm, original, changed_prompt)
    except ValueError as error:
        plan, demonstration = None, error
    if getattr(lm, "remote", None) is None:
        contributions, effects = block_page(lm, prompt, target=target, k=k)
        if plan is not None:
            demonstration = what_blocks_read(lm, original, changed_prompt)
        return contributions, effects, demonstration
    asked = None if plan is None else {name: plan[name] for name in ("ids", "changed_ids", "position")}
    contributions, effects, changes = remote_block_page(lm, prompt, target=target, k=k, reads=asked)
    return contributions, effects, demonstration if plan is None else reads_table(lm, plan, changes)
