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
from core.text.tokens import display_token, require_tokenizer
from core.running.trace import Trace, run_trace

ROWS_PER_PASS = 4_096  # hidden rows decoded per pass over the head (a 512-token, 28-layer prompt: 4 passes)
VOCAB_BLOCK = 2_048  # head rows per block on CPU: an fp32 copy of one (25 MB at hidden 3,072) stays in cache
BLOCK_BYTES = 256 * 2**20  # on GPUs, blocks grow until a block's fp32 logits reach this (and an offloaded head's)
PROBE_ROWS = (16, 128)  # row counts at which upcast_head times the two head paths


def _trace(lm: LoadedModel, prompt: str | Trace) -> Trace:
    if not lm.has_weights:  # also when handed another model's trace: a meta head has no values to decode with
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to decode hidden states.")
    return prompt if isinstance(prompt, Trace) else run_trace(lm, prompt)


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


def head_blocks(lm: LoadedModel, x: torch.Tensor):
    """Yield (first token id, logits (rows, block) fp32) over the vocabulary, for finished rows x (rows, H).

    The logits are what the model itself returns: its head, then Granite's scaling / Gemma's
    soft-cap (core/model/parts.py). Block by block so that no (rows, vocab) table is ever built, and
    so that an upcast copy of the head exists one cache-sized block at a time; upcast, the
    product is the 16-bit head's computed exactly in fp32 (the model itself rounds it to bf16).
    """
    head = lm.lm_head
    weight, bias = head.weight, head.bias  # (V, H), (V,) or None
    if weight.device.type == "meta":  # offloaded by accelerate: only the head's own forward can read it
        yield 0, lm.parts.adjust_logits(head(x).float())
        return
    x = x.to(weight.device)  # the head may sit on another GPU than the embeddings (a model spread over GPUs)
    rows = x.shape[0]
    upcast = upcast_head(weight.device, weight.dtype, rows, weight.shape[1])
    block = VOCAB_BLOCK if weight.device.type == "cpu" else max(VOCAB_BLOCK, BLOCK_BYTES // (4 * rows))
    inputs = x.float() if upcast else x
    for start in range(0, weight.shape[0], block):
        w = weight[start:start + block]  # (block, H), a view
        logits = inputs @ w.float().T if upcast else torch.nn.functional.linear(x, w).float()  # (rows, block)
        if bias is not None:
            logits += bias[start:start + block].float()
        yield start, lm.parts.adjust_logits(logits)


def finish_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the head's input, in the model's dtype on its device.

    The model's own final norm (read-only) unless `normed` (the trace's last entry already has
    it), and OPT-350m's project_out always.
    """
    x = hidden.to(device=lm.device, dtype=lm.dtype)  # (rows, H)
    return lm.parts.finish(x, normed=normed)


def decode_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the logits the model would give them (rows, V) float32."""
    return torch.cat([logits for _, logits in head_blocks(lm, finish_rows(lm, hidden, normed))], dim=1)


def top_k_and_lse(lm: LoadedModel, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k logits (rows, k), their token ids (rows, k), log-sum-exp (rows,)) of finished rows x.

    One pass over the head's blocks, merging each block's top k into the running top k and its
    log-sum-exp into the running one (the online softmax of Milakov & Gimelshein 2018).
    """
    top = ids = lse = None
    for start, logits in head_blocks(lm, x):
        block_top, block_ids = torch.topk(logits, min(k, logits.shape[1]), dim=-1)  # (rows, <=k)
        block_lse = torch.logsumexp(logits, dim=-1)  # (rows,)
        if top is None:
            top, ids, lse = block_top, block_ids + start, block_lse
            continue
        merged, merged_ids = torch.cat([top, block_top], 1), torch.cat([ids, block_ids + start], 1)
        top, pick = torch.topk(merged, min(k, merged.shape[1]), dim=-1)
        ids, lse = torch.gather(merged_ids, 1, pick), torch.logaddexp(lse, block_lse)
    return top, ids, lse


def _chunks(lm: LoadedModel, trace: Trace, chunk_rows: int | None):
    """Yield (layers, positions, finished rows x) for blocks of consecutive (layer, position) rows.

    Only one chunk of rows is copied out of the read-only trace at a time.
    """
    entries, T, H = trace.hidden_states.shape
    flat = trace.hidden_states.reshape(-1, H)  # (entries*T, H), a read-only view
    last_start = (entries - 1) * T  # rows of the last entry already have the final norm
    # An offloaded head yields its whole (rows, vocab) logits at once: bound the rows to BLOCK_BYTES.
    offloaded = lm.lm_head.weight.device.type == "meta"
    step = chunk_rows or (max(1, BLOCK_BYTES // (4 * lm.vocab_size)) if offloaded else ROWS_PER_PASS)
    for start in range(0, entries * T, step):
        stop = min(start + step, entries * T)
        parts = [(lo, hi, lo >= last_start) for lo, hi in ((start, min(stop, last_start)),
                                                            (max(start, last_start), stop)) if lo < hi]
        x = torch.cat([finish_rows(lm, torch.from_numpy(np.array(flat[lo:hi])), normed)
                       for lo, hi, normed in parts])  # (rows, H), finished
        rows = np.arange(start, stop)
        yield rows // T, rows % T, x


def logit_lens(lm: LoadedModel, prompt: str | Trace, k: int = 5, *, chunk_rows: int | None = None) -> pd.DataFrame:
    """Top-k next tokens of every (layer, position), as the model would predict if it stopped there.

    Columns: layer (0 = embeddings), position, rank (1 = top), token (readable), token_id, prob.
    """
    trace = _trace(lm, prompt)
    k = max(1, min(int(k), lm.vocab_size))
    layers, positions, ids, probs = [], [], [], []
    with lm.lock, torch.inference_mode():
        for layer, position, x in _chunks(lm, trace, chunk_rows):
            top, top_ids, lse = top_k_and_lse(lm, x, k)  # (rows, k), (rows, k), (rows,)
            layers.append(layer)
            positions.append(position)
            ids.append(top_ids.cpu().numpy())
            probs.append(torch.exp(top - lse[:, None]).cpu().numpy())  # only the top-k probabilities are kept
    ids, probs = np.concatenate(ids), np.concatenate(probs)  # (rows, k)
    rows = ids.shape[0]
    names = {i: display_token(lm, int(i)) for i in np.unique(ids)}
    return pd.DataFrame({
        "layer": np.repeat(np.concatenate(layers), k),
        "position": np.repeat(np.concatenate(positions), k),
        "rank": np.tile(np.arange(1, k + 1), rows),
        "token": [names[i] for i in ids.ravel()],
        "token_id": ids.ravel(),
        "prob": probs.ravel(),
    })


def lens_grid(table: pd.DataFrame, trace: Trace, num_layers: int) -> pd.DataFrame:
    """The top-1 rows of a lens table with the input token of each position and relative depth added."""
    top = table[table["rank"] == 1].copy()
    top["input_token"] = [trace.tokens[p] for p in top["position"]]
    top["relative_depth"] = top["layer"] / num_layers
    return top.reset_index(drop=True)


def last_position_table(table: pd.DataFrame) -> pd.DataFrame:
    """Top-k at the last position, one row per layer: columns layer, top 1 … top k ("'token' 37%")."""
    last = table[table["position"] == table["position"].max()]
    cells = last.assign(cell=[f"{t!r} {p:.0%}" for t, p in zip(last["token"], last["prob"])])
    wide = cells.pivot(index="layer", columns="rank", values="cell")
    wide.columns = [f"top {r}" for r in wide.columns]
    return wide.reset_index()


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
    trace = _trace(lm, prompt)
    T = len(trace.tokens)
    position = T - 1 if position is None else int(position)
    if not 0 <= position < T:
        raise ValueError(f"Position {position} is outside the {T} tokens that were run.")
    looked_up = ""
    if isinstance(target, str) and target != "":
        looked_up, target_id = target_lookup(lm, target, after_space)
    elif target is None or target == "":
        target_id = None
    else:
        target_id = int(target)
    entries = trace.hidden_states.shape[0]
    rows = torch.from_numpy(np.array(trace.hidden_states[:, position]))  # (entries, H)
    with lm.lock, torch.inference_mode():
        x = torch.cat([finish_rows(lm, rows[:-1], normed=False), finish_rows(lm, rows[-1:], normed=True)])
        logits = torch.cat([block for _, block in head_blocks(lm, x)], dim=1)  # (entries, V): one pass over the head
        if target_id is None:  # the model's own prediction: its real logits at the last position
            final = trace.last_logits if position == T - 1 else logits[-1].cpu().numpy()
            target_id = int(np.argmax(final))
        target_logit = logits[:, target_id : target_id + 1]  # (entries, 1)
        rank = (logits > target_logit).sum(-1) + 1  # (entries,)
        prob = torch.softmax(logits, dim=-1)[:, target_id]  # (entries,)
    return pd.DataFrame({
        "layer": np.arange(entries), "relative_depth": np.arange(entries) / (entries - 1), "position": position,
        "looked_up": looked_up, "token": display_token(lm, target_id), "token_id": target_id,
        "rank": rank.cpu().numpy(), "prob": prob.cpu().numpy(), "top1": rank.cpu().numpy() == 1,
    })


def first_top1_layer(trajectory: pd.DataFrame) -> int | None:
    """The first layer at which the target token is the top prediction (None: never)."""
    hits = trajectory.loc[trajectory["rank"] == 1, "layer"]
    return int(hits.iloc[0]) if len(hits) else None
