"""Speed of the context pages: trace cost, page switches, and the logit lens against its matmul bound.

1. `run_trace` (hidden states + attentions + logits kept) vs a plain forward of
   the same prompt, same model (target <= 1.5x).
2. Server time of a page switch once the trace is cached: AppTest switches
   Home -> page with everything cached, against Home -> Home (target: <= 0.3 s);
   and the page's compute path from a cached trace when its own table is not
   cached yet (a new k or word), against the same 0.3 s.
3. `logit_lens` over every layer and position vs the LM-head matmul alone over
   the same rows (same chunks), on the embedded pair and on the real
   Llama-3.2-3B head/hidden shape in bf16 (128,256 x 3,072; 29 entries).
   The 3B-shaped model is built with FEWER LAYERS (random weights, meta ->
   empty -> randn): the lens only needs the final norm and the head, and its
   input is a random hidden-state stack of the real shape (29, T, 3072).
   The trace-vs-forward ratio on that model uses the reduced layer count too.
   The lens runs the head in bf16 or in fp32 blocks, whichever core/running/lens.py's
   rule picks for this CPU (`upcast_head`); both matmuls are timed
   here (the bf16 one on one chunk, scaled), and the bound column is the head
   matmul at the faster dtype's measured FLOP/s (bench/bounds.py).

    python -m bench.context [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.bounds import head_bound as matmul_bound
from bench.common import Row, main, timed
from core import load_model, run_trace
from core.running.context import similarity_curves, word_vectors_across
from core.running.lens import last_position_table, lens_grid, logit_lens, token_trajectory, upcast_head
from core.model.loaded import LoadedModel
from core.running.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The company called Apple, which makes the iPhone, the iPad and the Mac, took its name from the fruit. "
        "Its first logo showed Isaac Newton sitting under an apple tree, because an apple falling from a tree is "
        "said to have made Newton think about gravity. So when we read the word apple, we have to look at the "
        "words around it to know whether it means the fruit or the company. Farmers pick apples in late summer "
        "and autumn and store them in cold rooms with little oxygen, so that the fruit stays fresh for months.")
FOUR = ["I ate an apple for breakfast", "She baked an apple pie for dessert",
        "The company that makes iPads and AirPods is called apple", "I bought shares of apple, the company behind the iPhone"]
DEMO = ["how about you?", "how are you?", "nice to meet you"]


def prompt_of(lm: LoadedModel, tokens: int) -> str:
    """A prefix of TEXT (repeated if needed) that is about `tokens` tokens long for this model."""
    text = (TEXT + " ") * 4
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
    return lm.tokenizer.decode(ids)


def plain_forward(lm: LoadedModel, prompt: str) -> None:
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    with lm.lock, torch.inference_mode():
        lm.model(input_ids=ids, use_cache=False)


def head_bound(lm: LoadedModel, trace: Trace, weight: torch.Tensor | None = None, rows_limit: int | None = None) -> None:
    """The LM-head matmul alone over the lens's rows, chunked exactly as the lens chunks them.

    `weight`: a head weight to use instead of the model's (an fp32 copy: the hardware bound on CPU).
    `rows_limit`: stop after this many rows (to time a slow path on a sample).
    """
    entries, T, H = trace.hidden_states.shape
    flat = trace.hidden_states.reshape(-1, H)[:rows_limit]
    rows = max(1, (256 * 2**20) // (4 * lm.vocab_size))
    with torch.inference_mode():
        for start in range(0, len(flat), rows):
            x = torch.from_numpy(np.array(flat[start:start + rows]))
            if weight is None:
                lm.lm_head(x.to(lm.dtype))
            else:
                x @ weight.T


def shaped_3b(layers: int, tokenizer) -> LoadedModel:
    """Llama-3.2-3B's real config with `layers` layers, random bf16 weights, without the slow init."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ROOT / "core" / "configs" / "llama-3.2-3b.json")
    config.num_hidden_layers = layers
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    model = model.to_empty(device="cpu").eval()
    model.model.rotary_emb = type(model.model.rotary_emb)(config)  # its buffers were left empty by to_empty
    model.tie_weights()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).mul_(0.02))
    return LoadedModel("llama-3.2-3b-shaped", None, model, tokenizer, True, "cpu", torch.bfloat16, 0.0)


def fake_trace(entries: int, T: int, H: int) -> Trace:
    hidden = np.random.default_rng(0).standard_normal((entries, T, H), dtype=np.float32)
    return Trace("random", "x" * T, np.zeros(T, np.int64), tuple("x" * T), np.zeros((T, 2), np.int64), hidden,
                 np.zeros((1, 1, T, T), np.float16), np.zeros(1, np.float32), False)


def page_switch_rows(repeat: int) -> list[Row]:
    """AppTest: Home -> page with the page's trace and tables cached, vs Home -> Home."""
    sys.path.insert(0, str(ROOT / "dashboard"))
    from tests.apptest import run_page

    app = run_page(None)
    pages = {"views/running/hidden_states.py": "hidden states", "views/running/similarity.py": "similarity",
             "views/running/logit_lens.py": "logit lens"}
    for page in pages:  # cold: traces and tables computed and cached
        app.switch_page(page).run()

    def switch(page: str) -> float:
        app.switch_page("views/home.py").run()
        start = time.perf_counter()
        app.switch_page(page).run()
        return time.perf_counter() - start

    home = min(switch("views/home.py") for _ in range(repeat))
    return [Row("page switch, trace cached (AppTest server time)", name, min(switch(p) for _ in range(repeat)),
                home, "s", "ours <= 0.3 s (baseline: switch to Home)") for p, name in pages.items()]


def measure(quick: bool) -> list[Row]:
    repeat = 1 if quick else 3
    tokens = 32 if quick else 128
    rows: list[Row] = []
    pair = [load_model("smollm2-135m"), load_model("gemma-3-270m")]
    for lm in pair:
        prompt = prompt_of(lm, tokens)
        trace = run_trace(lm, prompt)
        T = len(trace.tokens)
        rows.append(Row("trace vs plain forward", f"{lm.name}, {T} tokens", timed(lambda: run_trace(lm, prompt), repeat),
                        timed(lambda: plain_forward(lm, prompt), repeat), "s", "<= 1.5x"))
        rows.append(Row("logit lens vs LM-head matmul", f"{lm.name}, {trace.hidden_states.shape[0]} x {T} rows, fp32",
                        timed(lambda: logit_lens(lm, trace, 5), repeat), timed(lambda: head_bound(lm, trace), repeat),
                        "s", "close to 1x"))
        # compute paths from cached traces (a page's own table not cached yet: new k, word, target)
        lens_prompt = run_trace(lm, "The capital of France is")
        sims = [run_trace(lm, s) for s in FOUR]
        demo = [run_trace(lm, s) for s in DEMO]

        def lens_page() -> None:
            table = logit_lens(lm, lens_prompt, 5)
            lens_grid(table, lens_prompt, lm.num_layers)
            last_position_table(table)
            token_trajectory(lm, lens_prompt)

        rows.append(Row("lens page compute from cached trace", f"{lm.name}, 'The capital of France is'",
                        timed(lens_page, repeat), 0.3, "s", "<= 1x of 0.3 s"))
        rows.append(Row("similarity + hidden-state demo compute from cached traces", f"{lm.name}, 4 + 3 sentences",
                        timed(lambda: (similarity_curves(lm, sims, "apple"),
                                       word_vectors_across(lm, demo, ["how", "you"])), repeat),
                        0.3, "s", "<= 1x of 0.3 s"))

    # the real 3B head/hidden shape, bf16
    layers = 1 if quick else 4
    tokens = 16 if quick else 128
    big = shaped_3b(layers, pair[0].tokenizer)
    prompt = prompt_of(pair[0], tokens)
    rows.append(Row("trace vs plain forward", f"Llama-3.2-3B shape, {layers} of 28 layers, bf16, {tokens} tokens",
                    timed(lambda: run_trace(big, prompt), 1), timed(lambda: plain_forward(big, prompt), 1),
                    "s", "<= 1.5x"))
    trace = fake_trace(29, tokens, 3072)
    rows_per_chunk = (256 * 2**20) // (4 * big.vocab_size)  # head_bound's chunks, as the lens once ran
    case = f"Llama-3.2-3B head 128,256 x 3,072 bf16, 29 x {tokens} rows"
    lens_s = timed(lambda: logit_lens(big, trace, 5), 1)
    path = "fp32 blocks" if upcast_head("cpu", torch.bfloat16, 29 * tokens, 3072) else "bf16"
    bound, _ = matmul_bound(29 * tokens, 3072, big.vocab_size, torch.bfloat16)
    weight32 = big.lm_head.weight.float()  # an fp32 copy of the head: the fp32 matmul alone
    rows.append(Row(f"logit lens ({path}, picked by upcast_head) vs fp32 LM-head matmul", case, lens_s,
                    timed(lambda: head_bound(big, trace, weight32), 1), "s", "close to 1x", bound=bound))
    del weight32
    sample = min(rows_per_chunk, 29 * tokens)  # time one chunk of the model's own bf16 head, scale
    bf16_s = timed(lambda: head_bound(big, trace, rows_limit=sample), 1) * (29 * tokens) / sample
    rows.append(Row(f"logit lens ({path}, picked by upcast_head) vs the model's bf16 LM-head matmul "
                    "(1 chunk timed, scaled)", case, lens_s, bf16_s, "s", "close to 1x", bound=bound))
    rows += page_switch_rows(repeat)
    return rows


if __name__ == "__main__":
    main(measure)
