"""The logit lens (lecture step 6; nostalgebraist 2020, "interpreting GPT: the logit lens").

Every hidden-state entry of a Trace is decoded as if the model stopped there:
final norm (and OPT-350m's project_out), then the LM head, then what the
model itself does to its logits (Gemma's soft-capping, Granite's division by
logits_scaling; core/parts.py), then softmax. Entry 0 is the token embedding (already scaled
by sqrt(hidden) in Gemma, as the model does it). The last entry already has the
final norm applied (Hugging Face's convention), so it is NOT normed again and
the last layer reproduces the model's own logits exactly.

Cost: the LM-head matmul, rows x hidden x vocab for rows = (layers + 1) x T.
The full (rows, vocab) table of probabilities would be GBs for a 3B model and
a long prompt, so rows are decoded in chunks and only each row's top-k (and
the log-sum-exp needed for its probabilities) is kept.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import torch

from core.loading import LoadedModel, ModelLoadError
from core.tokens import display_token, require_tokenizer
from core.trace import Trace, run_trace

CHUNK_BYTES = 256 * 2**20  # logits of one chunk of rows (fp32) stay under this
VOCAB_BLOCK = 16_384  # rows of a 16-bit head upcast to fp32 at a time (200 MB of fp32 for hidden 3072)


def _trace(lm: LoadedModel, prompt: str | Trace) -> Trace:
    if not lm.has_weights:  # also when handed another model's trace: a meta head has no values to decode with
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to decode hidden states.")
    return prompt if isinstance(prompt, Trace) else run_trace(lm, prompt)


def softcap(lm: LoadedModel) -> float | None:
    """Gemma 2/3's final_logit_softcapping (logits = cap * tanh(logits / cap)), or None."""
    return lm.parts.layout.logit_softcap


def _head_fp32(head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The LM head in float32, one block of vocabulary rows at a time.

    Used where the CPU has no matmul instructions for the head's own 16-bit dtype
    (`upcast_head`). Upcasting the whole head would double its memory, so only
    VOCAB_BLOCK rows of it are upcast at a time. The result is the 16-bit head's
    product computed exactly in fp32 (the model itself would round it to bf16).
    """
    weight = head.weight  # (V, H), model dtype
    x = x.float()  # (rows, H)
    logits = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32, device=x.device)  # (rows, V)
    for start in range(0, weight.shape[0], VOCAB_BLOCK):
        logits[:, start:start + VOCAB_BLOCK] = x @ weight[start:start + VOCAB_BLOCK].float().T  # (rows, block)
    if head.bias is not None:
        logits += head.bias.float()
    return logits


# (device type, dtype) -> upcast the head? Filled by upcast_head once per process; a benchmark
# may set an entry to time the other path (bench/real_shapes_child.py).
_UPCAST_FASTER: dict[tuple[str, torch.dtype], bool] = {}


def _cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU has matmul instructions for `dtype` (AVX512-BF16 / AMX); torch's own checks."""
    cpu = torch.cpu
    if dtype == torch.bfloat16:
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    else:
        checks = ("_is_amx_fp16_supported",)
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def upcast_head(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether a 16-bit LM head runs in fp32 blocks (`_head_fp32`) rather than in its own dtype.

    A measured rule (README "Benchmarks", bench/real_shapes.py, the whole lens timed both ways
    side by side). On a 2-core CPU with AVX512-BF16 (no AMX), shared and loaded, the two paths
    came out within noise of each other (Llama-3.2-3B head, 319 rows: bf16 15.2 s vs fp32 blocks
    19.9 s in one run, 25.3 s vs 15.0 s in the next; Gemma-3-4b, 420 rows: 34.5 s vs 50.2 s),
    and there the head's own dtype needs no fp32 scratch block and reproduces the model's own
    logits more closely (max |diff| 0.004 vs 0.015). Where bf16 is emulated it is the slow one:
    in the 2026-11-23 run of this project the bf16 head took 5.4x the fp32 one (265 s vs 49 s).
    So: the head's own dtype where the CPU has instructions for it (AVX512-BF16 or AMX for bf16,
    AMX-FP16 for fp16, as torch reports them), fp32 blocks elsewhere (fp16 without AMX: not
    measured, treated like emulated bf16). A timing probe was tried first and dropped: on this
    shared machine a sub-second probe cannot tell two paths this close apart, and its answer
    changed from run to run. GPUs run 16-bit matmuls on tensor cores, so there the head is
    never upcast; fp32 models have nothing to pick.
    """
    device = torch.device(device)
    if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return False
    key = (device.type, dtype)
    if key not in _UPCAST_FASTER:
        _UPCAST_FASTER[key] = not _cpu_has_native(dtype)
    return _UPCAST_FASTER[key]


def decode_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the logits the model would give them (rows, V) float32.

    `normed`: the rows already went through the final norm (the last entry).
    Runs the model's own final norm (read-only, in the model's dtype) and its
    head (in its own dtype, or in fp32 blocks on CPUs without instructions for it: upcast_head).
    """
    x = hidden.to(device=lm.device, dtype=lm.dtype)  # (rows, H)
    x = lm.parts.finish(x, normed=normed)  # final norm unless normed; OPT-350m's project_out always
    # A head whose weight accelerate offloaded (meta here) must go through its own forward.
    if lm.lm_head.weight.device.type != "meta" and upcast_head(lm.device, lm.dtype):
        logits = _head_fp32(lm.lm_head, x)
    else:
        logits = lm.lm_head(x).float()  # (rows, V)
    return lm.parts.adjust_logits(logits)  # Granite's logits_scaling, Gemma's soft-capping


def _chunks(lm: LoadedModel, trace: Trace, chunk_rows: int | None):
    """Yield (layers, positions, logits (rows, V)) for blocks of consecutive (layer, position) rows.

    A block never mixes the last entry (already normed) with the others; only
    one block of logits exists at a time.
    """
    entries, T, H = trace.hidden_states.shape
    rows_per_chunk = chunk_rows or max(1, CHUNK_BYTES // (4 * lm.vocab_size))
    flat = trace.hidden_states.reshape(-1, H)  # (entries*T, H), a read-only view
    last_start = (entries - 1) * T  # rows of the last entry already have the final norm
    for normed, (lo, hi) in ((False, (0, last_start)), (True, (last_start, entries * T))):
        for start in range(lo, hi, rows_per_chunk):
            stop = min(start + rows_per_chunk, hi)
            rows = np.arange(start, stop)
            chunk = torch.from_numpy(np.array(flat[start:stop]))  # writable copy of this chunk only
            yield rows // T, rows % T, decode_rows(lm, chunk, normed)


def logit_lens(lm: LoadedModel, prompt: str | Trace, k: int = 5, *, chunk_rows: int | None = None) -> pd.DataFrame:
    """Top-k next tokens of every (layer, position), as the model would predict if it stopped there.

    Columns: layer (0 = embeddings), position, rank (1 = top), token (readable), token_id, prob.
    """
    trace = _trace(lm, prompt)
    k = max(1, min(int(k), lm.vocab_size))
    layers, positions, ids, probs = [], [], [], []
    with lm.lock, torch.inference_mode():
        for layer, position, logits in _chunks(lm, trace, chunk_rows):
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (rows, 1)
            top, top_ids = torch.topk(logits, k, dim=-1)  # (rows, k)
            layers.append(layer)
            positions.append(position)
            ids.append(top_ids.cpu().numpy())
            probs.append(torch.exp(top - lse).cpu().numpy())  # only the top-k probabilities are kept
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
        logits = torch.cat([decode_rows(lm, rows[:-1], normed=False),
                            decode_rows(lm, rows[-1:], normed=True)])  # (entries, V)
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
