"""One model in one fresh process, for bench/real_shapes.py: `python -m bench.real_shapes_child MODE FOLDER [--quick]`.

Prints one JSON line (the last line of stdout). Modes:
- raw: AutoTokenizer + AutoModelForCausalLM.from_pretrained of the folder (the load baseline);
- ours: load_model(folder, device_map="cpu"), then each page's FIRST computation on the fresh
  model, then the warm operations and the bounds (bench/bounds.py) in the same process;
- offload: load_model(folder, device_map="disk") and its first and second trace;
- policy: a plain forward with 1 and 2 threads, alternating (run under each OMP_WAIT_POLICY).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bounds import forward_bound, head_bound, table_pass_bound  # noqa: E402
from bench.real_shapes import LECTURE, PROMPT, SENTENCES, TRACE_TOKENS, WORD  # noqa: E402


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_forward(lm, ids: list[int]) -> None:
    """The model's forward alone: no hidden states, no attentions kept, logits at every position."""
    with lm.lock, torch.inference_mode():
        lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False)


def alternate(a, b, rounds: int = 2) -> tuple[float, float]:
    """Best of `rounds` of each, alternating, so load from other processes hits both alike."""
    best_a = best_b = float("inf")
    for _ in range(rounds):
        best_a, best_b = min(best_a, seconds(a)), min(best_b, seconds(b))
    return best_a, best_b


def raw(folder: str) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    AutoTokenizer.from_pretrained(folder)
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager",
                                                       output_loading_info=True)
    result = {"load": time.perf_counter() - start}
    # a name mismatch would silently time a random init instead of a load
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return result


def hidden_sanity(trace) -> dict:
    hidden = trace.hidden_states  # (L+1, T, H) float32
    magnitude = np.abs(hidden)
    tiny = np.finfo(np.float32).tiny
    assert np.isfinite(hidden).all(), "non-finite hidden states: the random weights misbehave"
    return {"hidden_max": float(magnitude.max()), "embedding_max": float(magnitude[0].max()),
            "subnormal": int(((magnitude > 0) & (magnitude < tiny)).sum())}


def lens_paths(lm, trace) -> dict:
    """The lens timed with each head path forced, and each path's last layer vs the model's own logits."""
    from core.running import lens

    entries, T, H = trace.hidden_states.shape
    result = {"probe_upcast": lens.upcast_head("cpu", lm.dtype, entries * T, H)}  # what the lens picks
    own = torch.from_numpy(np.array(trace.last_logits))  # (V,) the model's own, from its forward
    last = torch.from_numpy(np.array(trace.hidden_states[-1, -1:]))  # (1, H), already normed
    for upcast, name in ((True, "upcast"), (False, "native")):
        lens.FORCE_UPCAST = upcast
        result[f"lens_{name}"] = seconds(lambda: lens.logit_lens(lm, trace, 5))
        with torch.inference_mode():
            decoded = lens.decode_rows(lm, last, normed=True)[0]  # (V,)
        result[f"lens_diff_{name}"] = float((decoded - own).abs().max())
    lens.FORCE_UPCAST = None
    result["logit_scale"] = float(own.abs().max())
    return result


def ours(folder: str, quick: bool) -> dict:
    from core import load_model, run_trace
    from core.running.context import similarity_curves
    from core.model.reading import compute_inverse_norms, embedding_table
    from core.weights.embeddings import nearest_tokens
    from core.running.lens import logit_lens, token_trajectory
    from core.text.tokens import encode

    rss0 = psutil.Process().memory_info().rss  # after imports: they are not part of the load
    start = time.perf_counter()
    lm = load_model(folder, device_map="cpu")
    r = {"load": time.perf_counter() - start, "rss_load": psutil.Process().memory_info().rss - rss0,
         "weight_bytes": lm.weight_bytes, "dtype": str(lm.dtype).removeprefix("torch.")}

    # each page's first computation, on the fresh model, in the order a visitor would meet them
    trace = None

    def first_trace():
        nonlocal trace
        trace = run_trace(lm, LECTURE)

    r["trace_first"] = seconds(first_trace)
    r["similarity_first"] = seconds(lambda: similarity_curves(lm, [run_trace(lm, s) for s in SENTENCES], WORD))
    r["lens_first"] = seconds(lambda: (logit_lens(lm, trace, 5), token_trajectory(lm, trace)))
    r["nearest_first"] = seconds(lambda: nearest_tokens(lm, WORD, 10))
    r.update(hidden_sanity(trace))

    # the warm operations and the bounds, same process
    ids = encode(lm, LECTURE)[0]
    T = r["tokens"] = len(ids)
    r["plain"] = min(seconds(lambda: plain_forward(lm, ids)) for _ in range(2))
    r["forward_bound"], r["forward_rate"] = forward_bound(lm, T)
    sentence_ids = [encode(lm, s)[0] for s in SENTENCES]
    r["similarity_tokens"] = sum(len(s) for s in sentence_ids)
    r["similarity_plain"] = sum(seconds(lambda s=s: plain_forward(lm, s)) for s in sentence_ids)
    r["similarity_bound"] = sum(forward_bound(lm, len(s), repeat=1)[0] for s in sentence_ids)
    rows, H = trace.hidden_states.shape[0] * T, lm.text_config.hidden_size
    r["lens_rows"], r["hidden"], r["vocab"] = rows, H, lm.vocab_size
    r["head_bound"], r["head_rates"] = head_bound(rows, H, lm.vocab_size, lm.dtype)
    r.update(lens_paths(lm, trace))
    r["lens_warm"] = r["lens_upcast"] if r["probe_upcast"] else r["lens_native"]
    r["nearest_warm"] = min(seconds(lambda: nearest_tokens(lm, WORD, 10)) for _ in range(2))
    table = embedding_table(lm)
    r["table_shape"] = f"{table.shape[0]:,} x {table.shape[1]:,} {str(table.dtype).removeprefix('torch.')}"
    r["table_bound"], r["bandwidth"] = table_pass_bound(table)
    # what load_model spent on the row norms (it computes them once, at load): the same call again
    r["norms"] = min(seconds(lambda: compute_inverse_norms(table)) for _ in range(2))
    if not quick:
        long_ids = encode(lm, PROMPT)[0][:TRACE_TOKENS]
        r["plain_128"], r["trace_128"] = alternate(lambda: plain_forward(lm, long_ids),
                                                   lambda: run_trace(lm, PROMPT, max_tokens=TRACE_TOKENS))
        r["bound_128"], r["rate_128"] = forward_bound(lm, len(long_ids), repeat=1)
    r["rss_end"] = psutil.Process().memory_info().rss - rss0
    return r


def offload(folder: str) -> dict:
    from core import load_model, run_trace
    from core.text.tokens import encode

    with tempfile.TemporaryDirectory(prefix="bench-offload-") as scratch:
        lm = load_model(folder, device_map="disk", offload_folder=scratch)
        r = {"trace_first": seconds(lambda: run_trace(lm, LECTURE)),
             "trace_second": seconds(lambda: run_trace(lm, LECTURE)),
             "tokens": len(encode(lm, LECTURE)[0]),
             "disk_gb": lm.plan.bytes_on.get("disk", 0) / 1e9,
             "plan_seconds": lm.plan.offloaded_seconds_per_forward}
        del lm
    return r


def policy(folder: str) -> dict:
    from core import load_model
    from core.text.tokens import encode

    lm = load_model(folder, device_map="cpu")
    ids = encode(lm, LECTURE)[0]
    plain_forward(lm, ids)  # page the weights in

    def with_threads(n: int):
        def run():
            torch.set_num_threads(n)
            plain_forward(lm, ids)
        return run

    one, two = alternate(with_threads(1), with_threads(2))
    return {"one_thread": one, "two_threads": two, "tokens": len(ids), "bound": forward_bound(lm, len(ids))[0]}


if __name__ == "__main__":
    mode, folder = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv
    result = {"raw": lambda: raw(folder), "ours": lambda: ours(folder, quick), "offload": lambda: offload(folder),
              "policy": lambda: policy(folder)}[mode]()
    print(json.dumps(result))
