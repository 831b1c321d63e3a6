"""Bounded weight views: `weight_view` on a Gemma-3-4B-sized embedding table vs one full pass over it.

The page must not hang on the 262,208 x 2,560 embedding table. `weight_view` reads a
fixed number of values (corner + strided sample + 2 M-value statistics sample); the
baseline is the cheapest exact alternative: mean/std/min/max over every value.
"""

from __future__ import annotations

import torch

from bench.common import Row, main, timed
from core.weights.architecture import weight_view
from core.model.loaded import LoadedModel


def table_model(rows: int, cols: int, dtype: torch.dtype) -> LoadedModel:
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.embed_tokens = torch.nn.Embedding(rows, cols, dtype=dtype)  # random N(0, 1) weights
    module.requires_grad_(False)
    return LoadedModel("bench", None, module, None, True, "cpu", dtype, 0.0)


def full_pass(weight: torch.Tensor) -> None:
    weight.float().mean(), weight.float().std(), weight.aminmax()  # what exact statistics cost


def measure(quick: bool = False) -> list[Row]:
    rows, cols = (65_536, 2_560) if quick else (262_208, 2_560)
    lm = table_model(rows, cols, torch.bfloat16)
    weight = lm.model.embed_tokens.weight
    ours = timed(lambda: weight_view(lm, "embed_tokens.weight"), repeat=3)
    baseline = timed(lambda: full_pass(weight), repeat=1 if not quick else 2)
    return [Row("weight view vs exact stats over every value", f"bf16 {rows:,} x {cols:,}", ours, baseline, "s",
                "<= 0.5x, and flat in table size")]


if __name__ == "__main__":
    main(measure)
