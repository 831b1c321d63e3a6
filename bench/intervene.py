"""Speed of the intervention sweeps (Patchscopes, steering) against (layers × one generation).

A layer sweep could be run as one generation per layer. Ours reads every source
state from one trace and runs all layers of the target as one batch (row i
patched or steered at layer i only), so it should cost well under
layers × one generation. Measured on the embedded pair, side by side in one run:

1. Patchscopes, every source layer, 10 new tokens, entity-description prompt:
   `patchscope_from_trace` vs layers × one greedy `generate` of the same target.
2. Steered continuations of the test prompt at every layer (12 new tokens):
   `steered_continuations` vs layers × one steered `generate`.
3. "Try every layer" scores (3 held-out prompts, next token only): `layer_sweep`
   vs layers × one generation of 12 tokens (what scoring by generating would cost
   at the least).
The source / list traces are computed once before timing; run_trace is counted
during each sweep (must be 0).
4. The Patchscopes sweep with the target prompt's prefix (every token before the
   placeholder) run once and its key/value cache repeated for every row, vs every
   row running the whole prompt: on the embedded pair, and (without --quick) on the
   real Llama-3.2-3B shape of bench/real_shapes.py for 8 source layers.

    python -m bench.intervene [--quick]
"""

from __future__ import annotations

import time

import core.intervene.patchscopes
import core.intervene.steering
from bench.common import Row, main, timed
from core import load_model, run_trace
from core.text.chat import has_chat_template, model_text
from core.intervene.generation import Steer, generate
from core.intervene.patchscopes import DESCRIPTION_PROMPT, patchscope_from_trace, word_position
from core.intervene.steering import PRESETS, directions_from_traces, layer_sweep, steered_continuations

SOURCE, WORD = "Diana, Princess of Wales", "Wales"


MODULES = [core.intervene.patchscopes, core.intervene.steering]


def _count_traces(monkeypatched: list):
    original = MODULES[0].run_trace

    def counting(*args, **kwargs):
        monkeypatched.append(1)
        return original(*args, **kwargs)

    for module in MODULES:
        module.run_trace = counting
    return original


def measure(quick: bool = False) -> list[Row]:
    rows = []
    repeat = 1 if quick else 2
    for name in ("smollm2-135m", "gemma-3-270m"):
        lm = load_model(name)
        layers = lm.num_layers
        source = run_trace(lm, SOURCE)
        position = word_position(source, WORD)
        calls: list = []
        original = _count_traces(calls)
        try:
            one = timed(lambda: generate(lm, DESCRIPTION_PROMPT, max_new_tokens=10), repeat)
            sweep = timed(lambda: patchscope_from_trace(lm, source, position, DESCRIPTION_PROMPT, max_new_tokens=10),
                          repeat)
            rows.append(Row("Patchscopes sweep vs layers × one generation", f"{name}, {layers} layers, 10 tokens",
                            sweep, layers * one, "s", "< 1x; source traced once"))

            preset = PRESETS["Refuse vs comply (lecture; chat on)"]
            chat = has_chat_template(lm)
            positive = [run_trace(lm, model_text(lm, p, chat)) for p in preset["positive"]]
            negative = [run_trace(lm, model_text(lm, p, chat)) for p in preset["negative"]]
            directions = directions_from_traces(positive, negative)
            calls.clear()
            layer = layers // 2
            steer = Steer(layer, directions[layer], 4.0)
            one_steered = timed(lambda: generate(lm, preset["test_prompt"], max_new_tokens=12, chat=chat, steer=steer),
                                repeat)
            continuations = timed(lambda: steered_continuations(lm, directions, preset["test_prompt"], 4.0, chat=chat,
                                                                max_new_tokens=12), repeat)
            rows.append(Row("steered continuations at every layer vs layers × one steered generation",
                            f"{name}, {layers} layers, 12 tokens, chat {'on' if chat else 'off'}", continuations,
                            layers * one_steered, "s", "< 1x"))
            one_plain = timed(lambda: generate(lm, preset["test_prompt"], max_new_tokens=12, chat=chat), repeat)
            start = time.perf_counter()
            layer_sweep(lm, directions, preset["held_out"], 4.0, preset["positive_words"], preset["negative_words"],
                        chat=chat)
            scores = time.perf_counter() - start
            rows.append(Row("'Try every layer' scores (3 held-out prompts) vs layers × one generation",
                            f"{name}, {layers} layers", scores, layers * one_plain, "s", "< 1x"))
            rows.append(Row("source / list traces recomputed during the sweeps", name, float(len(calls)), 1.0,
                            "traces", "0"))
        finally:
            for module in MODULES:
                module.run_trace = original
    rows += prefix_rows(quick, repeat)
    return rows


def prefix_rows(quick: bool, repeat: int) -> list[Row]:
    """Patchscopes with the shared-prefix cache vs with it switched off, same sweep, same answers."""
    from bench.real_shapes import real_shape_folder

    cases = [("smollm2-135m", None), ("gemma-3-270m", None)]
    if not quick:
        cases.append((str(real_shape_folder("llama-3.2-3b")), list(range(8))))
    rows = []
    for source_name, layers in cases:
        lm = load_model(source_name) if layers is None else load_model(source_name, device_map="cpu")
        source = run_trace(lm, SOURCE)
        position = word_position(source, WORD)

        def sweep():
            return patchscope_from_trace(lm, source, position, DESCRIPTION_PROMPT, layers=layers, max_new_tokens=10)

        shared_table, shared = sweep(), timed(sweep, repeat)
        prefix_cache = core.intervene.patchscopes.prefix_cache
        core.intervene.patchscopes.prefix_cache = lambda lm, prefix_ids: None  # every row runs the whole prompt
        try:
            whole_table, whole = sweep(), timed(sweep, repeat)
        finally:
            core.intervene.patchscopes.prefix_cache = prefix_cache
        same = shared_table["token_ids"].tolist() == whole_table["token_ids"].tolist()
        count = len(shared_table)
        label = source_name if layers is None else "Llama-3.2-3B shape, random bf16"
        rows.append(Row(f"Patchscopes sweep: target prefix run once vs every row running the whole prompt "
                        f"(same answers: {same})", f"{label}, {count} rows, 10 tokens", shared, whole, "s", "< 1x"))
        del lm
    return rows


if __name__ == "__main__":
    main(measure)
