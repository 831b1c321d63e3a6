"""Remote models (issue 18): nnsight's local simulation of NDIF next to the local path, and the bytes back.

1. The logit lens at the last position on the embedded SmolLM2 (30 layers): core's local lens
   (one forward with hidden states kept, then the blockwise head over every row) against the
   remote lens run through nnsight's local simulation of NDIF (the request serialized as for NDIF,
   deserialized with our modules hidden, run on the same module, reduced to the top k inside the
   trace). Same prompt, same k, same numbers (tests/test_remote.py). The first row's baseline
   does exactly the remote lens's work here (run_trace, then the shared reduction on the last
   position), so its ratio is the simulation's overhead; the second's is core's lens over every
   position, what the local lens page computes.
2. The bytes that come back: measured for SmolLM2 (torch.save of the saved values), and computed
   from the config on the meta device for Llama-3.1-405B (126 layers, hidden 16,384, vocabulary
   128,256; config written by hand), against the lens page's 1 MB budget.

    python -m bench.remote [--quick]
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig

from bench.common import Row, main, timed
from core import load_model, logit_lens, run_trace
from core.remote.budget import LECTURE_TOKENS, LENS_PAGE_BUDGET, lens_page_bytes
from core.remote.lens import remote_lens_last
from core.remote.model import remote_model
from core.remote.reduce import lens_top_k

PROMPT = "The capital of France is Paris. The capital of Italy is"
K = 10


def llama_405b_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                       num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                       tie_word_embeddings=False)


def local_last(lm, prompt: str, k: int):
    """The same work on the local path: run_trace, then the shared reduction on the last position."""
    trace = run_trace(lm, prompt)
    rows = torch.from_numpy(trace.hidden_states[:, -1].copy())  # (L + 1, H)
    parts, layout = lm.parts, lm.parts.layout
    with lm.lock, torch.inference_mode():
        return lens_top_k(rows, 1 if parts.final_norm is not None else 0, parts.final_norm, parts.project_out,
                          parts.lm_head, layout.logit_multiplier, layout.logit_softcap, k)


def measure(quick: bool) -> list[Row]:
    repeat = 2 if quick else 5
    lm = load_model("smollm2-135m", device="cpu")
    simulated = remote_model(lm, "local")  # the same module, wrapped by nnsight
    tokens = len(lm.tokenizer(PROMPT)["input_ids"])
    remote_seconds = timed(lambda: remote_lens_last(simulated, PROMPT, K), repeat)
    case = f"{lm.name}, {tokens} tokens, top {K}"
    rows = [Row("lens, last position: remote='local' vs the same reduction locally", case, remote_seconds,
                timed(lambda: local_last(lm, PROMPT, K), repeat), "s", "the simulation's overhead"),
            Row("lens, last position: remote='local' vs core's logit_lens (every position)", case, remote_seconds,
                timed(lambda: logit_lens(lm, PROMPT, K), repeat), "s", "")]
    received = simulated.remote.last.bytes_received
    rows.append(Row("lens result bytes vs the lens page's budget", f"{lm.name}, last position, top {K}",
                    received / 1e6, LENS_PAGE_BUDGET / 1e6, "MB", "<= 1x"))
    config = llama_405b_config()
    rows.append(Row("lens page bytes (meta device) vs the budget",
                    f"Llama-3.1-405B, {LECTURE_TOKENS} tokens, every layer and position, top {K}",
                    lens_page_bytes(config, LECTURE_TOKENS, K) / 1e6, LENS_PAGE_BUDGET / 1e6, "MB", "<= 1x"))
    return rows


if __name__ == "__main__":
    main(measure)
