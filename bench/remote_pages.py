"""Every page's work on a remote model (issue 18): nnsight's local simulation of NDIF next to the local path.

For each page, the core call the page makes (one job for a remote model) is timed on the embedded
SmolLM2-135M-Instruct run here and on the same module wrapped for nnsight's local simulation of NDIF
(`remote="local"`: the request serialized as for NDIF, our modules hidden while it is deserialized,
the reduction run inside the trace). Both give the same numbers (tests/test_remote_*.py), so each
ratio is what the simulation adds: serializing the request, one extra forward pass where the local
path reuses a trace, and the reduction in the trace. The bytes column is what the job brought back
(measured on torch.save of the saved values) — what NDIF would send for SmolLM2; Llama-3.1-405B's
bytes per page are computed from its config on the meta device in the tests and listed in the README.

A back-of-envelope bound: SmolLM2's forward pass at ~13 tokens is 2 x 135M x 13 = 3.5 GFLOP, 10-30 ms on
these two cores (~200 GFLOP/s fp32), so run_trace's ~0.1 s is mostly eager attention and Python; the
simulation adds a near-constant ~15-30 ms per job (serializing the request, rebuilding it), which is
why the shortest call (a neighbour search, 9 ms here) shows the largest ratio.

    python -m bench.remote_pages [--quick]
"""

from __future__ import annotations

from bench.common import Row, main, timed
from core import load_model
from core.cause.attribution import token_attribution
from core.cause.blocks import block_page
from core.cause.patching import activation_patching
from core.intervene.generation import generate, next_token_table
from core.intervene.patchscopes import IDENTITY_PROMPT, patchscope
from core.intervene.steering import PRESETS, layer_sweep, steering_directions
from core.remote.model import remote_model
from core.running.attention_page import attention_page
from core.running.context import similarity_curves
from core.running.hidden_page import hidden_page
from core.running.lens_page import Follow, lens_page
from core.running.maps import model_maps
from core.running.maps_items import PRESETS as MAP_PRESETS, parse_items
from core.running.trace import run_trace
from core.weights.embeddings import nearest_tokens

PROMPT = "The capital of France is Paris. The capital of Italy is"
SENTENCES = ["I ate an apple today.", "Apple makes phones.", "The apple tree grew.", "She sold her Apple stock."]
DEMO = ["how about you?", "how are you?", "nice to meet you"]


SENTIMENT = PRESETS["Positive vs negative sentiment"]


def page_calls(lm) -> dict[str, callable]:
    """page -> the call it makes for one model (the page's defaults, shortened where they are long)."""
    directions = steering_directions(lm, SENTIMENT["positive"], SENTIMENT["negative"])  # (L, H), computed here
    items = parse_items(next(iter(MAP_PRESETS.values())))
    return {
        "run_trace (every array; a notebook's call)": lambda lm: run_trace(lm, PROMPT),
        "Hidden states": lambda lm: hidden_page(lm, "how are you?", 2, DEMO, ["how", "you"]),
        "Contextual similarity": lambda lm: similarity_curves(lm, SENTENCES, "apple"),
        "Logit lens (grid + trajectory)": lambda lm: lens_page(lm, PROMPT, k=5, follow=Follow(None, -1, True)),
        "Attention (summaries + grid + one head)": lambda lm: attention_page(
            lm, PROMPT, summaries=True, grid={"hide": True, "size": 16}, head=(0, 0)),
        "Next token (top 10)": lambda lm: next_token_table(lm, PROMPT, k=10),
        "Generation (greedy, 8 tokens)": lambda lm: generate(lm, PROMPT, max_new_tokens=8),
        "Embeddings (nearest 20)": lambda lm: nearest_tokens(lm, "apple", k=20),
        "Hidden-state maps (12 sentences)": lambda lm: model_maps(lm, items),
        "Patchscopes (identity prompt, 6 layers, 5 tokens)": lambda lm: patchscope(
            lm, "Diana, Princess of Wales", -1, IDENTITY_PROMPT, layers=range(0, 30, 5), max_new_tokens=5),
        "Steering: every layer's direction (5 + 5 prompts)": lambda lm: steering_directions(
            lm, SENTIMENT["positive"], SENTIMENT["negative"]),
        "Steering: the layer sweep (3 prompts, every layer)": lambda lm: layer_sweep(
            lm, directions, SENTIMENT["held_out"], 4.0, SENTIMENT["positive_words"], SENTIMENT["negative_words"]),
        "Activation patching (exact, residual stream)": lambda lm: activation_patching(
            lm, "The capital of France is", "The capital of Italy is", answer=" Paris", foil=" Rome"),
        "Which input tokens mattered (occlusion)": lambda lm: token_attribution(lm, PROMPT),
        "What each block writes (contributions + top 10)": lambda lm: block_page(lm, PROMPT, k=10),
    }


def measure(quick: bool) -> list[Row]:
    repeat = 2 if quick else 3
    lm = load_model("smollm2-135m", device="cpu")
    simulated = remote_model(lm, "local")  # the same module, wrapped by nnsight
    rows = []
    for page, call in page_calls(lm).items():
        call(lm), call(simulated)  # warm both (tokenizer, nnsight's first serialization)
        remote_seconds = timed(lambda: call(simulated), repeat)
        received = simulated.remote.last.bytes_received
        rows.append(Row(f"{page}: remote='local' vs here", f"{lm.name}; {received:,} bytes back", remote_seconds,
                        timed(lambda: call(lm), repeat), "s", "the simulation's overhead"))
    return rows


if __name__ == "__main__":
    main(measure)
