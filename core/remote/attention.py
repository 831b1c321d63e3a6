"""The Attention page of a remote model as ONE job: its summaries, its grid and one head, reduced where it runs.

What is captured: the model's own output attentions (`output_attentions=True`, as core.running.trace
asks for them), one (1, heads, T, T) tensor per layer; eager attention returns them (core loads
models with attn_implementation="eager"). They are reduced inside the trace by the local path's own
code, core.running.attention_reduce.attention_request (shipped by value, nnsight.register), so only
what the page draws comes back:
- the head summaries (L, 4, heads) float32; the grid (L, heads, s, s) float32, each head max-pooled to
  the cells the image draws (s <= 52); the picked head's (T, T) float16: for Llama-3.1-405B at 64
  tokens 16,783,329 bytes in all (tests/test_remote_attention.py), under the 64 MB budget;
- every head's weights (attention_weights) only when they fit the budget: (L, heads, T, T) float16 is
  132 MB for 405B at 64 tokens, so that call is refused before any job is sent (RemoteResultTooLarge,
  saying what to ask for instead).
A deployment that does not run eager attention returns no weights: the job says so plainly.
"""

from __future__ import annotations

import numpy as np
import torch

import core.running.attention_reduce as shared
from core.remote.errors import RemoteResultTooLarge
from core.remote.jobs import DEFAULT_BUDGET, result_bytes, shipping
from core.remote.model import RemoteLoadedModel
from core.running.trace import last_logits_only

def full_bytes(layers: int, heads: int, tokens: int) -> int:
    """torch.save bytes of every head's weights, (L, heads, T, T) float16, as a job would send them."""
    return result_bytes({"attention": {"full": torch.zeros(layers, heads, tokens, tokens, dtype=torch.float16)}})


def check_full(lm, tokens: int, budget: int = DEFAULT_BUDGET) -> None:
    """Refuse, before sending anything, a request for every head's weights that is over the budget."""
    size = full_bytes(lm.num_layers, lm.num_heads, tokens)
    if size > budget:
        raise RemoteResultTooLarge(
            f"Every attention weight of {lm.name} at {tokens} tokens is {size / 2**20:.1f} MiB "
            f"({lm.num_layers} layers x {lm.num_heads} heads x {tokens} x {tokens}), over the "
            f"{budget / 2**20:.0f} MiB a remote request may bring back; nothing was sent. Ask for what you "
            "will look at: core.running.attention_page.attention_page(lm, prompt, summaries=True, "
            "grid=..., head=(layer, head)) brings back the head summaries, the pooled grid and one head's "
            "weights; or use a shorter prompt.")


def attention_job(lm: RemoteLoadedModel, ids: list[int], *, summaries: bool = False, grid: dict | None = None,
                  head: tuple[int, int] | None = None, full: bool = False) -> dict[str, np.ndarray]:
    """attention_request for token `ids` (T,) where `lm` runs, as one NDIF job; its values as NumPy arrays.

    Raises RemoteError (core.remote.errors) with a plain message, also for a result over the budget.
    """
    nnsight = shipping(shared)
    rm = lm.remote
    nn = rm.nn
    input_ids = torch.tensor([list(ids)])  # (1, T)
    keep = {name: torch.tensor([len(ids) - 1]) for name in last_logits_only(lm, len(ids))}  # made here, not on meta
    what = [name for name, asked in (("summaries", summaries), ("grid", grid is not None),
                                     (f"head {head}", head is not None), ("every head", full)) if asked]
    job = rm.new_job(f"attention ({', '.join(what)}), {len(ids)} tokens")
    options = {"summaries": summaries, "grid": grid, "head": None if head is None else (int(head[0]), int(head[1])),
               "full": full}

    def work():
        with nn.session(backend=rm.backend(job)):
            with nn.trace(input_ids, output_attentions=True, use_cache=False, **keep):
                result = nnsight.save(shared.attention_request(nn.output.attentions, **options))
        return rm.measured(job, result, "attention")

    values = rm.run(job, work)
    return {name: value.cpu().numpy() for name, value in values.items()}
