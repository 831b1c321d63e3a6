"""`run_trace` of a remote model: the whole Trace (every hidden state, every head, the last logits) in ONE job.

What is captured is what core.running.trace keeps: hidden_states[l] for l = 0..L (the input of block
l for l < L, the final norm's output for l = L, read as core.remote.lens reads them), in float32; the
model's own output attentions (L, heads, T, T) in float16 where it returns them (eager attention;
None for a state-space model or a deployment running sdpa or flash attention); the last position's
logits (V,) in float32. The tokens, offsets and truncation come from the local tokenizer.

Unlike a page, a Trace is not reduced: it is everything. For Llama-3.1-405B at the lecture's 12 tokens
the hidden states alone are 127 x 12 x 16,384 x 4 = 99.9 MB, over the 64 MB any job may bring back, so
that call is refused before anything is sent; the page functions (logit_lens, similarity_curves, …)
reduce on the server instead. For a small or mid-sized model (Llama-3.1-70B: 32 MB at 12 tokens) it
is a notebook's way to get the raw states.
"""

from __future__ import annotations

import numpy as np
import torch

import core.remote.reduce as reduce
from core.remote.errors import RemoteResultTooLarge
from core.remote.jobs import DEFAULT_BUDGET, result_bytes, shipping
from core.remote.lens import lens_envoys
from core.remote.model import RemoteLoadedModel
from core.remote.reduce import first
from core.running.trace import last_logits_only


def trace_bytes(num_layers: int, hidden: int, heads: int, vocab: int, tokens: int) -> int:
    """torch.save bytes of a whole Trace's arrays as a job sends them (float32 states and logits, float16 heads)."""
    values = {"hidden": torch.zeros(num_layers + 1, tokens, hidden), "logits": torch.zeros(vocab),
              "attentions": torch.zeros(num_layers, heads, tokens, tokens, dtype=torch.float16) if heads else None}
    return result_bytes({"trace": values})


def trace_job(lm: RemoteLoadedModel, ids: list[int], budget: int = DEFAULT_BUDGET) -> dict[str, np.ndarray | None]:
    """Hidden states (L+1, T, H), attentions (L, heads, T, T) or None, and last logits (V,) of token `ids`,
    computed where `lm` runs, in one job. Refused before sending when they would pass `budget` bytes."""
    heads = lm.num_heads
    size = trace_bytes(lm.num_layers, lm.parts.layout.hidden_size, heads, lm.vocab_size, len(ids))
    if size > budget:
        raise RemoteResultTooLarge(
            f"A whole trace of {lm.name} at {len(ids)} tokens is {size / 2**20:.1f} MiB (every hidden state and "
            f"head), over the {budget / 2**20:.0f} MiB a remote request may bring back; nothing was sent. Use the "
            "functions that reduce where the model runs (logit_lens, similarity_curves, word_vectors_across, "
            "attention_page, …) or a shorter prompt (max_tokens).")
    nnsight = shipping(reduce)
    rm = lm.remote
    layers, norm, _, _ = lens_envoys(rm)
    count, nn = len(layers), rm.nn
    input_ids = torch.tensor([list(ids)])  # (1, T)
    keep = {name: torch.tensor([len(ids) - 1]) for name in last_logits_only(lm, len(ids))}  # made here, not on meta
    job = rm.new_job(f"a whole trace, {len(ids)} tokens", budget=budget)

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(input_ids, output_attentions=heads > 0, use_cache=False, **keep):
                states = [layers[layer].input for layer in range(count)]  # hidden_states[l], (1, T, H) each
                states.append(norm.output if norm is not None else first(layers[count - 1].output))
                hidden = torch.stack(states)[:, 0].float()  # (L+1, T, H)
                logits = nn.output.logits[0, -1].float().clone()  # (V,) a copy: a view sends its whole storage
                weights = nn.output.attentions if heads > 0 else None
                readable = bool(weights) and all(w is not None for w in weights)
                attentions = torch.stack(weights)[:, 0].to(torch.float16) if readable else None  # (L, heads, T, T)
                result = nnsight.save({"hidden": hidden, "logits": logits, "attentions": attentions})
        return rm.measured(job, result, "trace")

    values = rm.run(job, work)
    return {name: None if value is None else value.cpu().numpy() for name, value in values.items()}
