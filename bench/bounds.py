"""Back-of-envelope bounds, measured on this machine in the same run as the figures they bound.

A benchmark figure means little without the best this hardware could do for the same work.
Each bound here is (work) / (rate measured just now for that kind of work):

- a forward pass: 2 x (weights of every matmul the text model runs) x tokens FLOPs, plus the
  attention products (2 x 2 x layers x heads x T^2 x head_dim), over the FLOP/s of one
  matmul of the model's own MLP shape (T x hidden @ hidden x intermediate, model dtype,
  weight fresh in RAM). At a few tokens that matmul is limited by streaming its weight from
  memory, at 128 tokens by arithmetic; measuring it at the same T covers both.
- the LM-head matmul of the logit lens: 2 x rows x hidden x vocab FLOPs over the FLOP/s of a
  (rows x hidden @ hidden x 16,384) block, the faster of the head's dtype and fp32 (the lens
  may run either, core/running/lens.py `upcast_head`), not counting the upcast itself.
- one pass over an embedding table: its bytes over the bandwidth of the faster of a plain sum
  and a plain matvec over that same table (bench/embeddings.py `one_pass`).

This module is plumbing (no `measure`): `python -m bench` skips it.
"""

from __future__ import annotations

import torch

from core.running.lens import best_seconds  # the same timer as the lens's head-path probe

HEAD_BLOCK = 16_384  # vocabulary rows per timed head block (a bigger block than the lens uses: the faster rate)
RATE_ROWS = 512  # most rows a head-rate measurement uses


@torch.inference_mode()
def matmul_rate(rows: int, inner: int, cols: int, dtype: torch.dtype, repeat: int = 3) -> float:
    """FLOP/s of x (rows, inner) @ W.T with W (cols, inner), both `dtype`, as nn.Linear runs it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inner, generator=generator).to(dtype)  # (rows, inner)
    weight = torch.randn(cols, inner, generator=generator).mul_(0.02).to(dtype)  # (cols, inner)
    seconds = best_seconds(lambda: torch.nn.functional.linear(x, weight), repeat)
    return 2 * rows * inner * cols / seconds


def text_matmul_weights(model: torch.nn.Module) -> int:
    """Weights of every nn.Linear the text model runs per token (vision tower left out), head included."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "vision" not in name and "multi_modal_projector" not in name:
            total += module.in_features * module.out_features
    return total


def forward_flops(lm, tokens: int) -> float:
    """FLOPs of one forward pass over `tokens` tokens that computes logits at every position."""
    config = lm.text_config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 2 * 2 * lm.num_layers * config.num_attention_heads * tokens * tokens * head_dim
    return 2 * text_matmul_weights(lm.model) * tokens + attention


def forward_bound(lm, tokens: int, repeat: int = 3) -> tuple[float, float]:
    """(seconds, FLOP/s): a forward pass of `tokens` tokens at the rate of the model's own MLP matmul."""
    config = lm.text_config
    rate = matmul_rate(tokens, config.hidden_size, config.intermediate_size, lm.dtype, repeat)
    return forward_flops(lm, tokens) / rate, rate


def head_bound(rows: int, hidden: int, vocab: int, dtype: torch.dtype, repeat: int = 2) -> tuple[float, dict]:
    """(seconds, {dtype name: FLOP/s}): rows x hidden x vocab at the faster of `dtype` and fp32.

    The rate is measured on at most RATE_ROWS rows (the lens decodes chunks of a few hundred
    rows; thousands of rows would make the measurement itself take minutes).
    """
    rates = {str(d).removeprefix("torch."): matmul_rate(min(rows, RATE_ROWS), hidden, HEAD_BLOCK, d, repeat)
             for d in dict.fromkeys((dtype, torch.float32))}
    return 2 * rows * hidden * vocab / max(rates.values()), rates


def table_pass_bound(table: torch.Tensor) -> tuple[float, float]:
    """(seconds, bytes/s): one bandwidth-bound pass over `table` (faster of a sum and a matvec)."""
    from bench.embeddings import one_pass

    q = torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0))
    seconds = one_pass(table, q)
    return seconds, table.numel() * table.element_size() / seconds
