"""The local logit lens before and after it shared its code with the remote lens (issue 18), in one run.

Since issue 18's "one description of each analysis", core.running.lens decodes through
core.running.lens_reduce, the torch-only functions a remote job runs too. This checks that the
local path did not get slower for it: the implementation as it was before that change is kept
below, verbatim but for names (BASELINE, clearly labeled), and timed next to today's on the same
Trace of the embedded SmolLM2 (30 layers, vocabulary 49,152): logit_lens over every (layer,
position) and token_trajectory at the last position. The results must be bit-identical.

    python -m bench.lens_shared [--quick]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bench.common import Row, main, timed
from core import load_model, run_trace
from core.running import lens
from core.text.tokens import display_token

PROMPT = ("The capital of France is Paris. The capital of Italy is Rome. The capital of Germany is Berlin. "
          "The capital of Spain is")
K = 10


# ---------------------------------------------------------------- BASELINE: core.running.lens before issue 18's sharing


def baseline_head_blocks(lm, x):
    head = lm.lm_head
    weight, bias = head.weight, head.bias  # (V, H), (V,) or None
    if weight.device.type == "meta":
        yield 0, lm.parts.adjust_logits(head(x).float())
        return
    x = x.to(weight.device)
    rows = x.shape[0]
    upcast = lens.upcast_head(weight.device, weight.dtype, rows, weight.shape[1])
    block = lens.VOCAB_BLOCK if weight.device.type == "cpu" else max(lens.VOCAB_BLOCK, lens.BLOCK_BYTES // (4 * rows))
    inputs = x.float() if upcast else x
    for start in range(0, weight.shape[0], block):
        w = weight[start:start + block]  # (block, H)
        logits = inputs @ w.float().T if upcast else torch.nn.functional.linear(x, w).float()  # (rows, block)
        if bias is not None:
            logits += bias[start:start + block].float()
        yield start, lm.parts.adjust_logits(logits)


def baseline_finish_rows(lm, hidden, normed):
    return lm.parts.finish(hidden.to(device=lm.device, dtype=lm.dtype), normed=normed)  # (rows, H)


def baseline_top_k_and_lse(lm, x, k):
    top = ids = lse = None
    for start, logits in baseline_head_blocks(lm, x):
        block_top, block_ids = torch.topk(logits, min(k, logits.shape[1]), dim=-1)  # (rows, <=k)
        block_lse = torch.logsumexp(logits, dim=-1)  # (rows,)
        if top is None:
            top, ids, lse = block_top, block_ids + start, block_lse
            continue
        merged, merged_ids = torch.cat([top, block_top], 1), torch.cat([ids, block_ids + start], 1)
        top, pick = torch.topk(merged, min(k, merged.shape[1]), dim=-1)
        ids, lse = torch.gather(merged_ids, 1, pick), torch.logaddexp(lse, block_lse)
    return top, ids, lse


def baseline_chunks(lm, trace):
    entries, T, H = trace.hidden_states.shape
    flat = trace.hidden_states.reshape(-1, H)  # (entries*T, H)
    last_start = (entries - 1) * T
    offloaded = lm.lm_head.weight.device.type == "meta"
    step = max(1, lens.BLOCK_BYTES // (4 * lm.vocab_size)) if offloaded else lens.ROWS_PER_PASS
    for start in range(0, entries * T, step):
        stop = min(start + step, entries * T)
        parts = [(lo, hi, lo >= last_start) for lo, hi in ((start, min(stop, last_start)),
                                                            (max(start, last_start), stop)) if lo < hi]
        x = torch.cat([baseline_finish_rows(lm, torch.from_numpy(np.array(flat[lo:hi])), normed)
                       for lo, hi, normed in parts])  # (rows, H)
        rows = np.arange(start, stop)
        yield rows // T, rows % T, x


def baseline_logit_lens(lm, trace, k):
    layers, positions, ids, probs = [], [], [], []
    with lm.lock, torch.inference_mode():
        for layer, position, x in baseline_chunks(lm, trace):
            top, top_ids, lse = baseline_top_k_and_lse(lm, x, k)  # (rows, k), (rows, k), (rows,)
            layers.append(layer)
            positions.append(position)
            ids.append(top_ids.cpu().numpy())
            probs.append(torch.exp(top - lse[:, None]).cpu().numpy())
    ids, probs = np.concatenate(ids), np.concatenate(probs)  # (rows, k)
    names = {i: display_token(lm, int(i)) for i in np.unique(ids)}
    return pd.DataFrame({"layer": np.repeat(np.concatenate(layers), k),
                         "position": np.repeat(np.concatenate(positions), k),
                         "rank": np.tile(np.arange(1, k + 1), ids.shape[0]), "token": [names[i] for i in ids.ravel()],
                         "token_id": ids.ravel(), "prob": probs.ravel()})


def baseline_trajectory(lm, trace):
    """token_trajectory(lm, trace) with target=None at the last position, as it was."""
    T, entries = len(trace.tokens), trace.hidden_states.shape[0]
    rows = torch.from_numpy(np.array(trace.hidden_states[:, T - 1]))  # (entries, H)
    with lm.lock, torch.inference_mode():
        x = torch.cat([baseline_finish_rows(lm, rows[:-1], False), baseline_finish_rows(lm, rows[-1:], True)])
        logits = torch.cat([block for _, block in baseline_head_blocks(lm, x)], dim=1)  # (entries, V)
        target_id = int(np.argmax(trace.last_logits))
        target_logit = logits[:, target_id:target_id + 1]
        rank = (logits > target_logit).sum(-1) + 1
        prob = torch.softmax(logits, dim=-1)[:, target_id]
    return pd.DataFrame({"layer": np.arange(entries), "relative_depth": np.arange(entries) / (entries - 1),
                         "position": T - 1, "looked_up": "", "token": display_token(lm, target_id),
                         "token_id": target_id, "rank": rank.numpy(), "prob": prob.numpy(),
                         "top1": rank.numpy() == 1})


# ---------------------------------------------------------------- the measurement


def side_by_side(ours, baseline, repeat: int) -> tuple[float, float]:
    """Best seconds of each, timed alternately (a shared machine's load drifts over both alike)."""
    times = [(timed(ours, 1), timed(baseline, 1)) for _ in range(repeat)]
    return min(t for t, _ in times), min(b for _, b in times)



def measure(quick: bool) -> list[Row]:
    repeat = 3 if quick else 7
    lm = load_model("smollm2-135m", device="cpu")
    trace = run_trace(lm, PROMPT)
    new, old = lens.logit_lens(lm, trace, K), baseline_logit_lens(lm, trace, K)
    assert new.equals(old), "the shared lens must give the baseline's table bit for bit"
    assert lens.token_trajectory(lm, trace).equals(baseline_trajectory(lm, trace))
    entries, T = trace.hidden_states.shape[:2]
    case = f"{lm.name}, {T} tokens x {entries} entries, top {K}, identical tables"
    lens_s = side_by_side(lambda: lens.logit_lens(lm, trace, K), lambda: baseline_logit_lens(lm, trace, K), repeat)
    path_s = side_by_side(lambda: lens.token_trajectory(lm, trace), lambda: baseline_trajectory(lm, trace), repeat)
    return [Row("local logit_lens: shared code vs the baseline (before issue 18)", case, *lens_s, "s", "<= 1x"),
            Row("local token_trajectory: shared code vs the baseline", f"{lm.name}, last position, {entries} entries",
                *path_s, "s", "<= 1x")]


if __name__ == "__main__":
    main(measure)
