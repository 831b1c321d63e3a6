"""Speed of the causal analyses (core/cause/) against what they replace, measured side by side in one run.

1. Exact activation patching of the whole grid (3 sites × layers × positions) vs that many single
   forward passes (one forward, timed, × cells). Batching 64 cells per forward must make it cheaper.
   Bound: the grid's forward FLOPs (cells + 2 rows per chunk, × tokens, the head at the last position
   only) at the FLOP/s of the model's own MLP matmul at one chunk's tokens (bench/bounds.py).
2. Attribution patching of one site vs one forward plus one backward (our own autograd on
   hidden_states[0]): it is two forwards and one backward, so about 1.5×.
3. Occlusion vs T single forwards; gradient × input vs one forward + one backward.
4. Block contributions vs one plain forward (one forward with recording hooks, then a few dot products).
On the embedded pair; without --quick also at the real Llama-3.2-3B shape (random bf16 weights,
bench/real_shapes.py), where the exact grid is measured for the residual site only (~1 minute).

    python -m bench.cause [--quick]
"""

from __future__ import annotations

import torch

from bench.bounds import forward_bound, forward_flops
from bench.common import Row, main, timed
from core import activation_patching, block_contributions, load_model, token_attribution
from core.cause.patching import MAX_ROWS_PER_FORWARD, SITES

CLEAN, CORRUPTED, ANSWER, FOIL = "The capital of France is", "The capital of Italy is", " Paris", " Rome"


def _ids(lm, text):
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


def _forward(lm, ids):
    with torch.inference_mode():
        return lm.model(input_ids=ids, use_cache=False).logits[0, -1]


def _forward_backward(lm, ids):
    """One forward and one backward to hidden_states[0], written here with plain transformers."""
    leaf = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logprob = torch.log_softmax(lm.model(inputs_embeds=leaf, use_cache=False).logits[0, -1].float(), -1)[0]
    torch.autograd.grad(logprob, leaf)


def rows_for(lm, label: str, sites=SITES, repeat: int = 2) -> list[Row]:
    ids = _ids(lm, CLEAN)
    T, layers = ids.shape[1], lm.num_layers
    single = timed(lambda: _forward(lm, ids), repeat + 1)
    cells = len(sites) * layers * T

    def grid():
        for site in sites:
            activation_patching(lm, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site)

    exact = timed(grid, 1)
    chunks = -(-layers * T // MAX_ROWS_PER_FORWARD)  # per site
    batch_rows = len(sites) * (layers * T + 2 * chunks)  # patched cells + the clean and corrupted rows per chunk
    # Forward FLOPs of every token of every batched row, with the head run at the last position only
    # (core/cause/inputs.py asks for the last logits, as the pages do).
    # The rate of the MLP matmul at one chunk's token count (a batch of 66 rows is arithmetic-bound).
    _, rate = forward_bound(lm, min(layers * T, MAX_ROWS_PER_FORWARD) * T + 2 * T)
    head = lm.parts.lm_head.weight.numel()
    bound = (forward_flops(lm, T) - 2 * head * (T - 1)) * batch_rows / rate
    rows = [Row(f"exact patching, {len(sites)} site(s) × {layers} layers × {T} positions = {cells} cells, vs "
                f"{cells} single forwards; bound: the batched forwards' FLOPs", label, exact, cells * single, "s",
                "< 1x", bound=bound)]
    backward = timed(lambda: _forward_backward(lm, ids), repeat)
    attribution = timed(lambda: activation_patching(lm, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL,
                                                    method="attribution"), repeat)
    rows.append(Row("attribution patching (whole residual grid) vs one forward + one backward", label,
                    attribution, backward, "s", "~1.5x (2 forwards + 1 backward)"))
    occlusion = timed(lambda: token_attribution(lm, CLEAN, target=ANSWER), repeat)
    rows.append(Row(f"occlusion of {T} tokens (one batch) vs {T} single forwards", label, occlusion, T * single,
                    "s", "< 1x"))
    gradient = timed(lambda: token_attribution(lm, CLEAN, target=ANSWER, method="grad_x_input"), repeat)
    rows.append(Row("gradient × input vs one forward + one backward", label, gradient, backward, "s", "~1x"))
    blocks = timed(lambda: block_contributions(lm, CLEAN, target=ANSWER), repeat)
    rows.append(Row("block contributions vs one plain forward", label, blocks, single, "s", "~1x"))
    return rows


def measure(quick: bool = False) -> list[Row]:
    rows = []
    for name in ("smollm2-135m", "gemma-3-270m"):
        lm = load_model(name)
        rows += rows_for(lm, f"{name}, {lm.num_layers} layers")
        del lm
    if not quick:
        from bench.real_shapes import real_shape_folder

        lm = load_model(str(real_shape_folder("llama-3.2-3b")), device_map="cpu")
        rows += rows_for(lm, "Llama-3.2-3B shape, random bf16", sites=("resid",), repeat=1)
        del lm
    return rows


if __name__ == "__main__":
    main(measure)
