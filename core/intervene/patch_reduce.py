"""The Patchscopes edit, torch only: run by core.intervene.patchscopes here and inside a remote trace.

Why a module of its own: Patchscopes (Ghandeharioun et al. 2024) puts a source prompt's hidden
state in place of a placeholder token's hidden state of the target prompt. A remote model
(core.remote.patchscopes) makes that edit where it runs (NDIF's GPUs), and a function called inside
a remote trace is shipped to the server by value (`nnsight.register(this module)`), so it may use
torch and nothing else of ours. The local path's forward pre-hook calls the same function: one
description of the edit (issue 18).
"""

from __future__ import annotations

import torch


def replace_rows(hidden: torch.Tensor, rows: list[int], position: int, states: torch.Tensor) -> torch.Tensor:
    """A copy of `hidden` (batch, T, H) with hidden[rows[i], position] = states[i] ((len(rows), H)).

    The states are moved to hidden's device and dtype; other rows and positions are untouched.
    """
    hidden = hidden.clone()  # the block's input may be read again by the caller (residual): never in place
    hidden[rows, position] = states.to(device=hidden.device, dtype=hidden.dtype)
    return hidden
