"""Remote models (issue 18): nnsight's local simulation of NDIF next to the local path, and the bytes back.

1. The logit lens on the embedded SmolLM2 (30 layers): core's logit_lens / token_trajectory on the
   local model (run_trace, then the lens over every row) against the same calls on the same module
   wrapped for nnsight's local simulation of NDIF (the request serialized as for NDIF, deserialized
   with our modules hidden, the forward run and the grid reduced to its top k inside the trace, by
   the same core.running.lens_reduce functions). Same prompt, same k, same numbers
   (tests/test_remote_lens.py): each ratio is the simulation's overhead. The local lens before and
   after it shared its code with the remote one: bench/lens_shared.py.
2. The bytes that come back: measured for SmolLM2 (torch.save of the saved values), and computed
   from the config on the meta device for Llama-3.1-405B (126 layers, hidden 16,384, vocabulary
   128,256; config written by hand), against the lens page's 1 MB budget.

    python -m bench.remote [--quick]
"""

from __future__ import annotations

from transformers import LlamaConfig

from bench.common import Row, main, timed
from core import load_model, logit_lens, token_trajectory
from core.remote.budget import LECTURE_TOKENS, LENS_PAGE_BUDGET, lens_page_bytes
from core.remote.model import remote_model

PROMPT = "The capital of France is Paris. The capital of Italy is"
K = 10


def llama_405b_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                       num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                       tie_word_embeddings=False)


def measure(quick: bool) -> list[Row]:
    repeat = 2 if quick else 5
    lm = load_model("smollm2-135m", device="cpu")
    simulated = remote_model(lm, "local")  # the same module, wrapped by nnsight
    tokens = len(lm.tokenizer(PROMPT)["input_ids"])
    case = f"{lm.name}, {tokens} tokens, top {K}"
    rows = [Row("logit_lens (every layer and position): remote='local' vs here", case,
                timed(lambda: logit_lens(simulated, PROMPT, K), repeat), timed(lambda: logit_lens(lm, PROMPT, K), repeat),
                "s", "the simulation's overhead")]
    received = simulated.remote.last.bytes_received
    rows.append(Row("token_trajectory (last position): remote='local' vs here", f"{lm.name}, {tokens} tokens",
                    timed(lambda: token_trajectory(simulated, PROMPT), repeat),
                    timed(lambda: token_trajectory(lm, PROMPT), repeat), "s", "the simulation's overhead"))
    rows.append(Row("lens grid result bytes vs the lens page's budget", case, received / 1e6, LENS_PAGE_BUDGET / 1e6,
                    "MB", "<= 1x"))
    config = llama_405b_config()
    rows.append(Row("lens page bytes (meta device) vs the budget",
                    f"Llama-3.1-405B, {LECTURE_TOKENS} tokens, every layer and position + a trajectory, top {K}",
                    lens_page_bytes(config, LECTURE_TOKENS, K) / 1e6, LENS_PAGE_BUDGET / 1e6, "MB", "<= 1x"))
    return rows


if __name__ == "__main__":
    main(measure)
