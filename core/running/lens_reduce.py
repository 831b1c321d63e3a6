"""What the logit lens computes from hidden rows, in torch only: the ONE description, local and remote.

Why a module of its own, torch-only: core.running.lens runs these functions on a Trace's hidden
states here, and core.remote.lens runs the very same functions inside an nnsight trace where the
model is (nnsight.register ships this module by value with each request: the server has no `core`).
So the lens is written once: which rows get the final norm (every entry but the last, which already
has it; OPT's project_out on all), how the head is read (one block of the vocabulary at a time, a
16-bit block upcast to fp32 where that was measured faster), and how each row is reduced (a running
top-k and log-sum-exp, the online softmax of Milakov & Gimelshein 2018; a trajectory's rank and
probability of one token). Nothing else of ours is called from here.

What differs between the two callers is passed in, never decided here from `core`: where the rows
come from (`read`), the device and dtype they go to, the block sizes, and the upcast decision for a
given row count (core.running.lens measures it on this CPU). Modules or nnsight envoys are accepted
alike for `norm`, `project_out` and `head`; the head's weight is read where the function runs, so
an offloaded head (weight on the meta device) falls back to the head's own forward there.

Layer convention (core/model/parts.py): flat row r is hidden_states[r // T][r % T]; rows from
`last_start` on are hidden_states[L], which already have the final norm.
"""

from __future__ import annotations

import torch

ROWS_PER_PASS = 4_096  # hidden rows decoded per pass over the head (a 512-token, 28-layer prompt: 4 passes)
VOCAB_BLOCK = 2_048  # head rows per block on CPU: an fp32 copy of one (25 MB at hidden 3,072) stays in cache
BLOCK_BYTES = 256 * 2**20  # on GPUs, blocks grow until a block's fp32 logits reach this (and an offloaded head's)


def never(rows: int) -> bool:
    """The upcast rule on an accelerator, or wherever none was measured: the head's own dtype."""
    return False


def adjust_logits(logits: torch.Tensor, multiplier: float | None, softcap: float | None) -> torch.Tensor:
    """What the model does to its head's output: Granite/Cohere's factor, then Gemma's soft-cap (parts.Layout)."""
    if multiplier is not None:
        logits = logits * multiplier
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def home(value: torch.Tensor) -> torch.Tensor:
    """`value` on the CPU, to be sent back; a meta tensor stays one (core.remote.budget sizes results on meta)."""
    return value if value.device.type == "meta" else value.to("cpu", copy=True)  # never a view of a bigger storage


def finish(x: torch.Tensor, normed: bool, norm=None, project_out=None) -> torch.Tensor:
    """Hidden rows (R, H) -> the head's input (R, H'): the final norm unless `normed`, then OPT's project_out."""
    if norm is not None and not normed:
        x = norm(x)
    if project_out is not None:
        x = project_out(x)
    return x


def row_parts(start: int, stop: int, last_start: int) -> list[tuple[int, int, bool]]:
    """Flat rows [start, stop) split into (lo, hi, normed) runs at `last_start` (where hidden_states[L] begins)."""
    runs = ((start, min(stop, last_start), False), (max(start, last_start), stop, True))
    return [(lo, hi, normed) for lo, hi, normed in runs if lo < hi]


def block_rows(device_type: str, rows: int, vocab_block: int, block_bytes: int) -> int:
    """Head rows per block: a cache-sized block on CPU; on an accelerator, until fp32 logits reach block_bytes."""
    return vocab_block if device_type == "cpu" else max(vocab_block, block_bytes // (4 * rows))


def head_blocks(x: torch.Tensor, head, *, multiplier: float | None, softcap: float | None, upcast,
                vocab_block: int, block_bytes: int):
    """Yield (first token id, logits (rows, block) fp32) over the vocabulary, for finished rows x (rows, H).

    The logits are what the model itself returns (head, then adjust_logits). Block by block, so no
    (rows, vocab) table is built and an upcast copy of the head exists one block at a time; upcast,
    the product is the 16-bit head's computed exactly in fp32 (the model itself rounds it to bf16).
    `upcast(rows) -> bool`: whether a 16-bit head on the CPU is upcast for this many rows.
    """
    weight, bias = head.weight, getattr(head, "bias", None)  # (V, H), (V,) or None
    if weight.device.type == "meta":  # offloaded by accelerate: only the head's own forward can read it
        yield 0, adjust_logits(head(x).float(), multiplier, softcap)
        return
    x = x.to(weight.device)  # the head may sit on another GPU than the rows (a model spread over GPUs)
    rows = x.shape[0]
    lift = weight.device.type == "cpu" and weight.dtype in (torch.bfloat16, torch.float16) and bool(upcast(rows))
    block = block_rows(weight.device.type, rows, vocab_block, block_bytes)
    inputs = x.float() if lift else x
    for start in range(0, weight.shape[0], block):
        w = weight[start:start + block]  # (block, H), a view
        logits = inputs @ w.float().T if lift else torch.nn.functional.linear(x, w).float()  # (rows, block)
        if bias is not None:
            logits += bias[start:start + block].float()
        yield start, adjust_logits(logits, multiplier, softcap)


def top_k_and_lse(blocks, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k logits (rows, k), their token ids (rows, k), log-sum-exp (rows,)) over head_blocks' blocks.

    Each block's top k is merged into the running top k and its log-sum-exp into the running one.
    """
    top = ids = lse = None
    for start, logits in blocks:
        block_top, block_ids = torch.topk(logits, min(k, logits.shape[1]), dim=-1)  # (rows, <=k)
        block_lse = torch.logsumexp(logits, dim=-1)  # (rows,)
        if top is None:
            top, ids, lse = block_top, block_ids + start, block_lse
            continue
        merged, merged_ids = torch.cat([top, block_top], 1), torch.cat([ids, block_ids + start], 1)
        top, pick = torch.topk(merged, min(k, merged.shape[1]), dim=-1)
        ids, lse = torch.gather(merged_ids, 1, pick), torch.logaddexp(lse, block_lse)
    return top, ids, lse


def finished_chunks(rows, total: int, last_start: int, step: int, *, device, dtype, norm, project_out, read=None):
    """Yield (start, stop, finished rows x (n, H')) for chunks of `step` consecutive flat rows of [0, total).

    `rows`: the flat hidden rows, a (total, H) tensor, or anything `read(rows, lo, hi)` turns into a
    (n, H) tensor (a read-only NumPy trace: only one chunk is copied out at a time). Each chunk goes to
    `device` and `dtype` (the model's) before it is finished.
    """
    for start in range(0, total, step):
        stop = min(start + step, total)
        x = torch.cat([finish((read(rows, lo, hi) if read else rows[lo:hi]).to(device=device, dtype=dtype),
                              normed, norm, project_out)
                       for lo, hi, normed in row_parts(start, stop, last_start)])  # (n, H')
        yield start, stop, x


def top_k_probs(x: torch.Tensor, k: int, head, **head_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Finished rows x (n, H') -> top-k token ids (n, k) int64 and probabilities (n, k) float32.

    One pass over the head (head_blocks' options); only the top-k probabilities are formed: exp(logit - lse).
    """
    top, ids, lse = top_k_and_lse(head_blocks(x, head, **head_options), k)  # (n, k), (n, k), (n,)
    return ids, torch.exp(top - lse[:, None])


def lens_grid(rows, total: int, last_start: int, step: int, *, k: int, device, dtype, norm, project_out, head,
              **head_options) -> tuple[torch.Tensor, torch.Tensor]:
    """Every flat row's top-k ids (total, k) int64 and probabilities (total, k) float32, on the CPU (home)."""
    ids, probs = [], []
    for _, _, x in finished_chunks(rows, total, last_start, step, device=device, dtype=dtype, norm=norm,
                                   project_out=project_out):
        chunk_ids, chunk_probs = top_k_probs(x, k, head, **head_options)
        ids.append(home(chunk_ids))
        probs.append(home(chunk_probs))
    return torch.cat(ids), torch.cat(probs)


def position_logits(rows: torch.Tensor, *, device, dtype, norm, project_out, head, **head_options) -> torch.Tensor:
    """hidden_states[0..L] at one position (L + 1, H) -> their lens logits (L + 1, V) fp32, one pass over the head."""
    rows = rows.to(device=device, dtype=dtype)
    x = torch.cat([finish(rows[:-1], False, norm, project_out), finish(rows[-1:], True, norm, project_out)])
    return torch.cat([block for _, block in head_blocks(x, head, **head_options)], dim=1)


def rank_and_prob(logits: torch.Tensor, target_id) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank (1 = top) (E,) int64 and probability (E,) float32 of token `target_id` in each row of logits (E, V)."""
    target_logit = logits[:, target_id:target_id + 1]  # (E, 1)
    rank = (logits > target_logit).sum(-1) + 1  # (E,)
    return rank, torch.softmax(logits, dim=-1)[:, target_id]


def lens_request(states, final, *, norm, project_out, head, grid=None, trajectory=None, **head_options) -> dict:
    """What a remote lens job computes from what its trace captured, as CPU tensors (all that comes back).

    states: hidden_states[0..L] as captured, (1, T, H) each (the inputs of blocks 0..L-1, then the
    final norm's output); final: the model's own head output at the last position (V,) or None.
    grid={"k", "step"[, "last_only"]}: every (layer, position)'s top k, "ids" and "probs" ((L + 1) * T, k),
    layer-major (only the last position's: (L + 1, k), with last_only).
    trajectory={"position", "target_id"}: "rank" and "prob" (L + 1,) of one token at one position,
    and its "target_id" (None: the model's own prediction there, as core.running.lens picks it).
    """
    last = states[-1]
    hidden = torch.stack([state[0].to(last.device) for state in states])  # (E, T, H), the model's dtype
    entries, T, H = hidden.shape
    where = {"device": last.device, "dtype": hidden.dtype, "norm": norm, "project_out": project_out, "head": head}
    out = {}
    if grid is not None:
        rows = hidden[:, -1:] if grid.get("last_only") else hidden  # (E, T', H)
        total = entries * rows.shape[1]
        out["ids"], out["probs"] = lens_grid(rows.reshape(total, H), total, total - rows.shape[1], grid["step"],
                                             k=grid["k"], **where, **head_options)
    if trajectory is not None:
        position, target = trajectory["position"], trajectory["target_id"]
        logits = position_logits(hidden[:, position], **where, **head_options)  # (E, V)
        if target is None:  # the model's own logits at the last position, else the lens's last row
            own = logits[-1] if final is None else adjust_logits(final, head_options.get("multiplier"),
                                                                 head_options.get("softcap")).float()
            target = int(torch.argmax(own.to(logits.device)))
        out["rank"], out["prob"] = (home(value) for value in rank_and_prob(logits, target))
        out["target_id"] = torch.tensor(target)
    return out
