"""The arithmetic of activation patching and occlusion, torch only: run here and inside a remote trace.

Why torch only and a module of its own: a remote model (core.remote.cause) edits and reduces where it
runs (NDIF's GPUs), and a function called inside a remote trace is shipped to the server by value
(`nnsight.register(this module)`), so it may use torch and nothing else of ours. The local hooks
(core.cause.patching, core.cause.attribution) call the same functions: one description of which cells
a batch patches, how a patched row is edited, and how the metric and the scores are reduced.

Activation patching (Meng et al. 2022; Heimersheim & Nanda 2024): each batch carries the clean run in
row 0, the corrupted run in row 1 and one patched (layer, position) cell in every further row, which
copies its value from row 0 of the same batch at the same site;
    m = logit(answer) − logit(foil) at the last position,  score = (m_patched − m_corrupted) / (m_clean − m_corrupted).
Occlusion (Zeiler & Fergus 2014, on tokens): row 0 is the real run, row i + 1 has hidden_states[0] at
position i set to zero; score = log p(target) − log p(target | occluded).
The gradient modes reduce a backward pass to the page's numbers the same way on both paths:
attribution patching's first-order cell (Nanda 2023) Σ_d (a_clean − a_corrupted) · ∂m/∂a, and
gradient × input (Shrikumar et al. 2017) Σ_d ∂ log p/∂h · h, each one score per position.
"""

from __future__ import annotations

import torch


def cell_chunks(layers: int, length: int, size: int) -> list[dict[int, tuple[list[int], list[int]]]]:
    """The grid's (layer, position) cells in batches of `size` patched rows: per batch, for each layer it
    edits (in forward order), the rows (from 2: rows 0 and 1 are clean and corrupted) and their positions."""
    cells = [(layer, position) for layer in range(layers) for position in range(length)]
    out = []
    for start in range(0, len(cells), size):
        by_layer: dict[int, tuple[list[int], list[int]]] = {}
        for row, (layer, position) in enumerate(cells[start:start + size], start=2):
            rows, positions = by_layer.setdefault(layer, ([], []))
            rows.append(row)
            positions.append(position)
        out.append(by_layer)
    return out


def chunk_rows(chunk: dict) -> int:
    """Rows of a chunk's batch: the clean, the corrupted, and one per patched cell."""
    return 2 + sum(len(rows) for rows, _ in chunk.values())


def by_position(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """`hidden` as (batch, T, hidden), a view of the same numbers. OPT's MLP works on (batch · T, hidden)."""
    return hidden.view(-1, length, hidden.shape[-1])


def copy_from_clean(hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
    """A copy of `hidden` with hidden[row, position] = hidden[0, position] for each (row, position)."""
    hidden = hidden.clone()  # (batch, T, H), or (batch · T, H)
    cells = by_position(hidden, length)  # a view: writing into it writes into `hidden`
    cells[rows, positions] = cells[0, positions]
    return hidden


def zero_rows(hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A copy of `hidden` (batch, T, H) with hidden[rows[i], positions[i]] = 0."""
    hidden = hidden.clone()
    hidden[rows, positions] = 0
    return hidden


def with_first(output, value):
    """A module's output with its first element replaced by `value` (a tuple output), or `value` itself."""
    if isinstance(output, tuple):
        return (value, *output[1:])
    return value


def first(output):
    """A module's output as a tensor: its first element when it returns a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def metric(logits: torch.Tensor, answer_id, foil_id) -> torch.Tensor:
    """logit(answer) − logit(foil) per row, float64: logits (batch, vocab) -> (batch,)."""
    return (logits[:, answer_id] - logits[:, foil_id]).double()


def patch_scores(m: torch.Tensor) -> torch.Tensor:
    """(m_patched − m_corrupted) / (m_clean − m_corrupted) for rows 2.. of one batch, normalised by its own
    clean (row 0) and corrupted (row 1) metric: m (batch,) -> (batch − 2,)."""
    return (m[2:] - m[1]) / (m[0] - m[1])


def target_logprob(logits: torch.Tensor, target_id) -> torch.Tensor:
    """log p(target) per row, float64: logits (batch, vocab) -> (batch,)."""
    return torch.log_softmax(logits.float(), -1)[:, target_id].double()


def first_order(clean: torch.Tensor, corrupted: torch.Tensor, grad: torch.Tensor, length: int) -> torch.Tensor:
    """Σ over hidden of (clean − corrupted) · grad for row 0, float64: the first-order estimate of
    m_patched − m_corrupted for each position; (1, T, H) or (T, H) each -> (T,)."""
    delta = by_position(clean.float() - corrupted.float(), length)  # (1, T, H)
    return (delta * by_position(grad.float(), length)).sum(-1)[0].double()


def grad_x_input(grad: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Σ over hidden of grad · hidden for row 0, float64: gradient × input per position; (1, T, H) -> (T,)."""
    return (grad.float() * hidden.float()).sum(-1)[0].double()
