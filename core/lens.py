"""The logit lens (lecture step 6; nostalgebraist 2020, "interpreting GPT: the logit lens").

Every hidden-state entry of a Trace is decoded as if the model stopped there:
final norm, then the LM head, then (Gemma) the same logit soft-capping the
model applies, then softmax. Entry 0 is the token embedding (already scaled
by sqrt(hidden) in Gemma, as the model does it). The last entry already has the
final norm applied (Hugging Face's convention), so it is NOT normed again and
the last layer reproduces the model's own logits exactly.

Cost: the LM-head matmul, rows x hidden x vocab for rows = (layers + 1) x T.
The full (rows, vocab) table of probabilities would be GBs for a 3B model and
a long prompt, so rows are decoded in chunks and only each row's top-k (and
the log-sum-exp needed for its probabilities) is kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core.loading import LoadedModel
from core.tokens import display_token, require_tokenizer
from core.trace import Trace, run_trace

CHUNK_BYTES = 256 * 2**20  # logits of one chunk of rows (fp32) stay under this
VOCAB_BLOCK = 16_384  # rows of a bf16 head upcast to fp32 at a time on CPU (200 MB for hidden 3072)


def _trace(lm: LoadedModel, prompt: str | Trace) -> Trace:
    return prompt if isinstance(prompt, Trace) else run_trace(lm, prompt)


def softcap(lm: LoadedModel) -> float | None:
    """Gemma 2/3's final_logit_softcapping (logits = cap * tanh(logits / cap)), or None."""
    return getattr(lm.text_config, "final_logit_softcapping", None)


def _head_fp32(head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The LM head in float32, one block of vocabulary rows at a time.

    CPUs without bf16 instructions run a bf16 matmul about 5x slower than
    fp32 (measured here: 45 s vs 8 s for 256 x 3072 x 128,256). Upcasting the
    whole head would double its memory, so only VOCAB_BLOCK rows of it are
    upcast at a time. The result is the bf16 head's product computed exactly
    in fp32 (the model itself would round it to bf16).
    """
    weight = head.weight  # (V, H), model dtype
    x = x.float()  # (rows, H)
    logits = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32, device=x.device)  # (rows, V)
    for start in range(0, weight.shape[0], VOCAB_BLOCK):
        logits[:, start:start + VOCAB_BLOCK] = x @ weight[start:start + VOCAB_BLOCK].float().T  # (rows, block)
    if head.bias is not None:
        logits += head.bias.float()
    return logits


def decode_rows(lm: LoadedModel, hidden: torch.Tensor, normed: bool) -> torch.Tensor:
    """Hidden vectors (rows, H) -> the logits the model would give them (rows, V) float32.

    `normed`: the rows already went through the final norm (the last entry).
    Runs the model's own final norm (read-only, in the model's dtype) and its
    head (in fp32 blocks on CPU for bf16/fp16 models, see _head_fp32).
    """
    x = hidden.to(device=lm.device, dtype=lm.dtype)  # (rows, H)
    if not normed:
        x = lm.parts.finish(x)
    if lm.device == "cpu" and lm.dtype in (torch.bfloat16, torch.float16):
        logits = _head_fp32(lm.lm_head, x)
    else:
        logits = lm.lm_head(x).float()  # (rows, V)
    cap = softcap(lm)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


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


def target_token_id(lm: LoadedModel, target: str) -> int:
    """The first token of `target` in this model's vocabulary (no BOS)."""
    if not target:
        raise ValueError("Type a target token.")
    ids = require_tokenizer(lm)(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f'"{target}" gives no token in {lm.name}.')
    return int(ids[0])


def token_trajectory(lm: LoadedModel, prompt: str | Trace, target: str | int | None = None) -> pd.DataFrame:
    """Rank and probability of one token at the LAST position, layer by layer.

    `target`: text (its first token is used), a token id, or None for the
    model's own final prediction. Columns: layer, relative_depth, token,
    token_id, rank (1 = top), prob, top1 (bool).
    """
    trace = _trace(lm, prompt)
    if target is None or target == "":
        target_id = int(np.argmax(trace.last_logits))
    elif isinstance(target, str):
        target_id = target_token_id(lm, target)
    else:
        target_id = int(target)
    entries = trace.hidden_states.shape[0]
    last = torch.from_numpy(np.array(trace.hidden_states[:, -1]))  # (entries, H)
    with lm.lock, torch.inference_mode():
        logits = torch.cat([decode_rows(lm, last[:-1], normed=False),
                            decode_rows(lm, last[-1:], normed=True)])  # (entries, V)
        target_logit = logits[:, target_id : target_id + 1]  # (entries, 1)
        rank = (logits > target_logit).sum(-1) + 1  # (entries,)
        prob = torch.softmax(logits, dim=-1)[:, target_id]  # (entries,)
    return pd.DataFrame({
        "layer": np.arange(entries), "relative_depth": np.arange(entries) / (entries - 1),
        "token": display_token(lm, target_id), "token_id": target_id,
        "rank": rank.cpu().numpy(), "prob": prob.cpu().numpy(), "top1": rank.cpu().numpy() == 1,
    })


def first_top1_layer(trajectory: pd.DataFrame) -> int | None:
    """The first layer at which the target token is the top prediction (None: never)."""
    hits = trajectory.loc[trajectory["rank"] == 1, "layer"]
    return int(hits.iloc[0]) if len(hits) else None
