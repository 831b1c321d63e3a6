"""The logit lens (lecture step 6; nostalgebraist 2020, "interpreting GPT: the logit lens").

Every hidden-state entry of a Trace is decoded as if the model stopped there:
final norm (and OPT-350m's project_out), then the LM head, then what the
model itself does to its logits (Gemma's soft-capping, Granite's division by
logits_scaling; core/model/parts.py), then softmax. Entry 0 is the token embedding (already scaled
by sqrt(hidden) in Gemma, as the model does it). The last entry already has the
final norm applied (Hugging Face's convention), so it is NOT normed again and
the last layer reproduces the model's own logits exactly.

Cost: the LM-head matmul, rows x hidden x vocab for rows = (layers + 1) x T.
The full (rows, vocab) table of probabilities would be GBs for a 3B model and
a long prompt, so the head is read one block of the vocabulary at a time and
only each row's running top-k (and the log-sum-exp needed for its
probabilities) is kept. On CPU a 16-bit head block may be upcast to fp32 first
when that is measured to be faster (upcast_head).

One description, local and remote (issue 18): how rows are finished, how the head is read and
how rows are reduced is core.running.lens_reduce (torch only); this module decides the policies
measured here (block sizes, upcast) and where the rows come from. A remote model (core.remote;
`lm.remote` set) runs the same functions inside one nnsight job where the model is, from the
prompt's token ids (a Trace is accepted for its token ids): no Trace of hidden states is made
here (127 x T x 16,384 floats for Llama-3.1-405B), and only the top k come back.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError
from core.text.tokens import require_tokenizer
from core.remote.lens import lens_job, prompt_ids
from core.running import lens_reduce as shared
# Rows per pass, head rows per CPU block, fp32 logit bytes per GPU block: read from here at each call.
from core.running.lens_reduce import BLOCK_BYTES, ROWS_PER_PASS, VOCAB_BLOCK  # noqa: F401 (tests set them here)
from core.running.lens_table import (first_top1_layer, grid_table, last_position_table, lens_grid,  # noqa: F401
                                     top_k_table, trajectory_table)
from core.running.trace import Trace, run_trace

PROBE_ROWS = (16, 128)  # row counts at which upcast_head times the two head paths


def _trace(lm: LoadedModel, prompt: str | Trace) -> Trace:
    if not lm.has_weights:  # also when handed another model's trace: a meta head has no values to decode with
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to decode hidden states.")
    return prompt if isinstance(prompt, Trace) else run_trace(lm, prompt)


def _is_remote(lm: LoadedModel) -> bool:
    """A core.remote model: its forward passes run where lm.remote says (NDIF or its local simulation)."""
    return getattr(lm, "remote", None) is not None


def softcap(lm: LoadedModel) -> float | None:
    """Gemma 2/3's final_logit_softcapping (logits = cap * tanh(logits / cap)), or None."""
    return lm.parts.layout.logit_softcap


# ---------------------------------------------------------------- the head, one vocabulary block at a time


@dataclass(frozen=True)
class HeadCosts:
    """Seconds for one VOCAB_BLOCK of a 16-bit head, as (fixed, per row), for each path, measured here."""

    native: tuple[float, float]  # the head's own dtype (fp32 accumulation, rounded output)
    upcast: tuple[float, float]  # the block upcast to fp32, then an fp32 matmul

    def upcast_faster(self, rows: int) -> bool:
        return self.upcast[0] + self.upcast[1] * rows < self.native[0] + self.native[1] * rows


def best_seconds(fn, repeat: int = 2) -> float:
    """Best of `repeat` timed calls, after one untimed one."""
    fn()  # untimed: kernel selection, first touch
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def measure_head_costs(dtype: torch.dtype, hidden: int) -> HeadCosts:
    """Time one head block both ways at PROBE_ROWS rows and fit a line to each (about 0.1 s, once).

    Why measure: which path is faster depends on the CPU and on the row count. Here (2 cores,
    AVX512-BF16, no AMX) oneDNN's bf16 matmul runs at 160-190 GFLOP/s and MKL's fp32 one at
    260-310, so above ~60 rows the upcast pays for itself; below, the matmul only streams the
    weight and the half-size bf16 read wins. With AMX, bf16 wins everywhere; where bf16 is
    emulated it loses everywhere (5.4x in an earlier run of this project).
    """
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB_BLOCK, hidden, generator=generator).mul_(0.02).to(dtype)  # (block, H)
    seconds = {"native": [], "upcast": []}
    for rows in PROBE_ROWS:
        x = torch.randn(rows, hidden, generator=generator).to(dtype)  # (rows, H)
        seconds["native"].append(best_seconds(lambda: torch.nn.functional.linear(x, weight).float()))
        seconds["upcast"].append(best_seconds(lambda: x.float() @ weight.float().T))
    (r0, r1) = PROBE_ROWS

    def line(t: list[float]) -> tuple[float, float]:
        per_row = max(0.0, (t[1] - t[0]) / (r1 - r0))
        return max(0.0, t[0] - per_row * r0), per_row

    return HeadCosts(line(seconds["native"]), line(seconds["upcast"]))


_HEAD_COSTS: dict[tuple[torch.dtype, int], HeadCosts] = {}  # measured once per process and shape
FORCE_UPCAST: bool | None = None  # benchmarks set it to time one path; None: upcast_head decides


def upcast_head(device: torch.device | str, dtype: torch.dtype, rows: int, hidden: int) -> bool:
    """Whether `rows` hidden rows go through a 16-bit head upcast to fp32 block by block.

    CPU only: GPUs run 16-bit matmuls on tensor cores, and fp32 heads have nothing to pick.
    On CPU the choice is measured (measure_head_costs), not assumed.
    """
    if torch.device(device).type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return False
    if FORCE_UPCAST is not None:
        return FORCE_UPCAST
    key = (dtype, hidden)
    if key not in _HEAD_COSTS:
        _HEAD_COSTS[key] = measure_head_costs(dtype, hidden)
    return _HEAD_COSTS[key].upcast_faster(rows)


def head_options(lm: LoadedModel, sizes=None) -> dict:
    """head_blocks' options for this model: what it does to its logits, block sizes, the upcast rule.

    sizes=None: the upcast is decided here for each row count (upcast_head). Row counts given
    (a remote job): decided for each of them now, on this copy of the head, and shipped as a table;
    on the meta device (NDIF's GPUs) that is "never".
    """
    layout, weight = lm.parts.layout, lm.lm_head.weight  # (V, H)

    def upcast(rows: int) -> bool:
        return upcast_head(weight.device, weight.dtype, rows, weight.shape[1])

    rule = upcast if sizes is None else {int(n): upcast(int(n)) for n in sizes}.get
    return {"multiplier": layout.logit_multiplier, "softcap": layout.logit_softcap, "upcast": rule,
            "vocab_block": VOCAB_BLOCK, "block_bytes": BLOCK_BYTES}


def head_blocks(lm: LoadedModel, x: torch.Tensor):
    """Yield (first token id, logits (rows, block) fp32) over the vocabulary, for finished rows x (rows, H).

    core.running.lens_reduce.head_blocks with this model's options: what the model itself returns
    (its head, then Granite's scaling / Gemma's soft-cap), one vocabulary block at a time.
    """
    yield from shared.head_blocks(x, lm.lm_head, **head_options(lm))


def finish_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the head's input, in the model's dtype on its device.

    The model's own final norm (read-only) unless `normed` (the trace's last entry already has
    it), and OPT-350m's project_out always.
    """
    x = hidden.to(device=lm.device, dtype=lm.dtype)  # (rows, H)
    return shared.finish(x, normed, lm.parts.final_norm, lm.parts.project_out)


def decode_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the logits the model would give them (rows, V) float32."""
    return torch.cat([logits for _, logits in head_blocks(lm, finish_rows(lm, hidden, normed))], dim=1)


def top_k_and_lse(lm: LoadedModel, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k logits (rows, k), their token ids (rows, k), log-sum-exp (rows,)) of finished rows x."""
    return shared.top_k_and_lse(head_blocks(lm, x), k)


def pass_rows(lm: LoadedModel, chunk_rows: int | None = None) -> int:
    """Hidden rows finished and decoded per pass over the head.

    An offloaded head yields its whole (rows, vocab) logits at once: its rows are bounded by BLOCK_BYTES.
    """
    offloaded = lm.lm_head.weight.device.type == "meta"
    return chunk_rows or (max(1, BLOCK_BYTES // (4 * lm.vocab_size)) if offloaded else ROWS_PER_PASS)


def _numpy_rows(flat: np.ndarray, lo: int, hi: int) -> torch.Tensor:
    return torch.from_numpy(np.array(flat[lo:hi]))  # a copy: the trace stays read-only


def _chunks(lm: LoadedModel, trace: Trace, chunk_rows: int | None):
    """Yield (layers, positions, finished rows x) for blocks of consecutive (layer, position) rows.

    Only one chunk of rows is copied out of the read-only trace at a time.
    """
    entries, T, H = trace.hidden_states.shape
    flat = trace.hidden_states.reshape(-1, H)  # (entries*T, H), a read-only view
    parts = lm.parts
    for start, stop, x in shared.finished_chunks(flat, entries * T, (entries - 1) * T, pass_rows(lm, chunk_rows),
                                                 device=lm.device, dtype=lm.dtype, norm=parts.final_norm,
                                                 project_out=parts.project_out, read=_numpy_rows):
        rows = np.arange(start, stop)
        yield rows // T, rows % T, x


def remote_grid(lm: LoadedModel, tokens: int, k: int, chunk_rows: int | None = None) -> tuple[dict, set[int]]:
    """A remote job's grid request (core.remote.lens.lens_job) for `tokens` positions, and the row counts
    its passes over the head take (head_options decides the upcast for each, here)."""
    total = (lm.num_layers + 1) * tokens
    step = pass_rows(lm, chunk_rows) if lm.has_weights else chunk_rows or ROWS_PER_PASS  # NDIF's head: on GPUs
    return {"k": k, "step": step}, {min(step, total), total % step or step}


def logit_lens(lm: LoadedModel, prompt: str | Trace, k: int = 5, *, chunk_rows: int | None = None) -> pd.DataFrame:
    """Top-k next tokens of every (layer, position), as the model would predict if it stopped there.

    Columns: layer (0 = embeddings), position, rank (1 = top), token (readable), token_id, prob.
    A remote model (core.remote) reduces the whole grid where it runs, in one job, from the prompt
    (or a Trace's token ids: its hidden states are not needed); only the top k come back.
    """
    k = max(1, min(int(k), lm.vocab_size))
    if _is_remote(lm):
        ids = prompt_ids(lm, prompt)
        grid, sizes = remote_grid(lm, len(ids), k, chunk_rows)
        return grid_table(lm, len(ids), lens_job(lm, ids, head=head_options(lm, sizes), grid=grid))
    trace = _trace(lm, prompt)
    layers, positions, ids, probs = [], [], [], []
    with lm.lock, torch.inference_mode():
        for layer, position, x in _chunks(lm, trace, chunk_rows):
            top_ids, top_probs = shared.top_k_probs(x, k, lm.lm_head, **head_options(lm))  # (rows, k) each
            layers.append(layer)
            positions.append(position)
            ids.append(top_ids.cpu().numpy())
            probs.append(top_probs.cpu().numpy())
    return top_k_table(lm, np.concatenate(layers), np.concatenate(positions), np.concatenate(ids),
                       np.concatenate(probs))


_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _written_without_spaces(ch: str) -> bool:
    """Chinese, Japanese, Thai… put no space between words, so no word of them follows a space."""
    return ch.isalpha() and unicodedata.name(ch, "").startswith(_NO_SPACE_SCRIPTS)


def target_lookup(lm: LoadedModel, target: str, after_space: bool = True) -> tuple[str, int]:
    """The text actually looked up for a typed word, and the id of its first token in this model.

    A word inside a sentence usually follows a space, and most vocabularies (Llama's "ĠParis",
    Gemma's "▁Paris") have a different token for it than for the bare word at the start of a text.
    With `after_space`, a word typed without leading whitespace is looked up as " " + word, unless it
    starts with a letter of a script written without spaces (天氣: Chinese text has no " 天") or the
    first token of " " + word is only the space or part of a character: then the word is looked up as
    typed. Text typed with a leading space is always looked up as typed.
    """
    if not target:
        raise ValueError("Type a target token.")
    tokenizer = require_tokenizer(lm)

    def first(text: str) -> int | None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return int(ids[0]) if ids else None

    if after_space and not target[0].isspace() and not _written_without_spaces(target[0]):
        spaced = first(" " + target)
        if spaced is not None:
            shown = tokenizer.decode([spaced])
            if shown.strip() and "\ufffd" not in shown:
                return " " + target, spaced
    plain = first(target)
    if plain is None:
        raise ValueError(f'"{target}" gives no token in {lm.name}.')
    return target, plain


def target_token_id(lm: LoadedModel, target: str, after_space: bool = False) -> int:
    """The first token of `target` in this model's vocabulary (no BOS); see target_lookup for `after_space`."""
    return target_lookup(lm, target, after_space)[1]


def token_trajectory(lm: LoadedModel, prompt: str | Trace, target: str | int | None = None,
                     position: int | None = None, after_space: bool = False) -> pd.DataFrame:
    """Rank and probability of one token at one position (default: the LAST), layer by layer.

    `target`: text (its first token is used, see target_lookup for `after_space`), a token id, or
    None for the model's own final prediction at that position. Columns: layer, relative_depth,
    position, looked_up (the text whose first token is followed; "" for an id or None), token,
    token_id, rank (1 = top), prob, top1 (bool).
    """
    remote = _is_remote(lm)
    trace = None if remote else _trace(lm, prompt)
    ids = prompt_ids(lm, prompt) if remote else trace.token_ids
    position = checked_position(position, len(ids))
    looked_up, target_id = followed_token(lm, target, after_space)
    entries = lm.num_layers + 1 if remote else trace.hidden_states.shape[0]
    if remote:  # the same reduction, where the model runs: only (L + 1) ranks and probabilities come back
        result = lens_job(lm, ids, head=head_options(lm, {entries}),
                          trajectory={"position": position, "target_id": target_id})
        target_id, rank, prob = int(result["target_id"]), result["rank"], result["prob"]
    else:
        parts = lm.parts
        with lm.lock, torch.inference_mode():
            logits = shared.position_logits(torch.from_numpy(np.array(trace.hidden_states[:, position])),
                                            device=lm.device, dtype=lm.dtype, norm=parts.final_norm,
                                            project_out=parts.project_out, head=lm.lm_head,
                                            **head_options(lm))  # (entries, V): one pass over the head
            if target_id is None:  # the model's own prediction: its real logits at the last position
                final = trace.last_logits if position == len(ids) - 1 else logits[-1].cpu().numpy()
                target_id = int(np.argmax(final))
            rank, prob = (t.cpu().numpy() for t in shared.rank_and_prob(logits, target_id))  # (entries,) each
    return trajectory_table(lm, position, looked_up, target_id, rank, prob)


def checked_position(position: int | None, tokens: int) -> int:
    """The position a trajectory reads (None: the last of `tokens`); ValueError outside them."""
    position = tokens - 1 if position is None else int(position)
    if not 0 <= position < tokens:
        raise ValueError(f"Position {position} is outside the {tokens} tokens that were run.")
    return position


def followed_token(lm: LoadedModel, target: str | int | None, after_space: bool) -> tuple[str, int | None]:
    """(looked_up, token id) a trajectory follows: a text's first token (target_lookup), an id, or
    ("", None) for the model's own prediction (picked where the logits are)."""
    if isinstance(target, str) and target != "":
        return target_lookup(lm, target, after_space)
    return "", None if target is None or target == "" else int(target)
