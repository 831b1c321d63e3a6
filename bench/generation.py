"""Speed of core.generate against transformers' model.generate, same model, same settings, same run.

For each model of the embedded pair and each decoding mode, tokens per second of
- ours: core.generate.generate_ids (lock, seeded sampler, optional streaming callback), and
- the baseline: lm.model.generate on the same ids with the same settings
  (greedy: do_sample=False; sampled: do_sample=True, temperature, top_p, top_k=0, torch's global RNG).
Runs alternate ours / baseline and each side keeps its best of `repeat`, so a burst of load on this
shared machine hits both. Target: ours >= 0.9x the baseline's tokens/s.

    python -m bench.generation [--quick]
"""

from __future__ import annotations

import time

import torch

from bench.common import Row, main
from core import load_model
from core.generate import generate_ids
from core.loading import LoadedModel

PROMPT = "Once upon a time, in a small village by the sea, there lived"
SETTINGS = {"greedy": dict(temperature=0.0, top_p=1.0), "sampled T=0.8, top-p 0.95": dict(temperature=0.8, top_p=0.95)}


def _baseline(lm: LoadedModel, ids: list[int], n: int, temperature: float, top_p: float) -> int:
    input_ids = torch.tensor([ids], device=lm.device)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    out = lm.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n,
                            pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id, **sampling)
    return out.shape[1] - len(ids)


def _ours(lm: LoadedModel, ids: list[int], n: int, temperature: float, top_p: float, stream: bool) -> int:
    on_token = (lambda token_id, text: None) if stream else None
    return len(generate_ids(lm, ids, max_new_tokens=n, temperature=temperature, top_p=top_p, seed=0,
                            on_token=on_token).token_ids)


def _tokens_per_second(run) -> float:
    start = time.perf_counter()
    tokens = run()
    return tokens / (time.perf_counter() - start)


def measure(quick: bool = False) -> list[Row]:
    n, repeat = (16, 2) if quick else (48, 4)
    rows = []
    for name in ("smollm2-135m", "gemma-3-270m"):
        lm = load_model(name)
        ids = lm.tokenizer(PROMPT)["input_ids"]
        _ours(lm, ids, 4, 0.0, 1.0, False)  # warm-up: first-call allocations are not part of either side
        _baseline(lm, ids, 4, 0.0, 1.0)
        for mode, settings in SETTINGS.items():
            for stream in (False, True):
                ours = baseline = 0.0
                for _ in range(repeat):  # alternate, keep each side's best
                    ours = max(ours, _tokens_per_second(lambda: _ours(lm, ids, n, stream=stream, **settings)))
                    baseline = max(baseline, _tokens_per_second(lambda: _baseline(lm, ids, n, **settings)))
                what = "generate_ids + on_token (streaming)" if stream else "generate_ids"
                rows.append(Row(f"generation tokens/s: {what} vs model.generate", f"{name}, {mode}, {n} tokens",
                                ours, baseline, "tok/s", target=">= 0.9x"))
        del lm
    return rows


if __name__ == "__main__":
    main(measure)
