"""One forward pass per (model, prompt), frozen into a `Trace` every analysis reads.

Like TransformerLens' `run_with_cache`, but the result is plain NumPy:
hidden states of every layer, attention weights of every head, and the
model's own next-token logits at the last position. Arrays are read-only, so
a trace can be shared between pages and browser sessions.

Conventions (Hugging Face's):
- hidden_states[0] is the embedding output (Gemma multiplies it by sqrt(hidden));
  hidden_states[i] is the output of layer i; the last entry already has the
  model's final norm applied, so lm_head(hidden_states[-1]) == logits.
- attentions[l, h, i, j] is how much token i attends to token j in layer l, head h.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.loading import LoadedModel, ModelLoadError
from core.tokens import display_token, encode, require_tokenizer

MAX_TRACE_TOKENS = 512  # longer prompts are cut (attention is T×T per head)


@dataclass(frozen=True, eq=False)
class Trace:
    model_name: str
    prompt: str
    token_ids: np.ndarray  # (T,) int64
    tokens: tuple[str, ...]  # readable text of each token
    offsets: np.ndarray  # (T, 2) character span of each token in the prompt; (0, 0) for BOS
    hidden_states: np.ndarray  # (layers + 1, T, hidden) float32
    attentions: np.ndarray  # (layers, heads, T, T) float16
    last_logits: np.ndarray  # (vocab,) float32: the model's own next-token logits at the last position
    truncated: bool  # the prompt had more than MAX_TRACE_TOKENS tokens

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.token_ids, self.offsets, self.hidden_states, self.attentions, self.last_logits))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def run_trace(lm: LoadedModel, prompt: str, max_tokens: int = MAX_TRACE_TOKENS) -> Trace:
    """Run `prompt` through `lm` once and keep everything the pages read."""
    require_tokenizer(lm)
    if not lm.has_weights:
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to run a prompt.")
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty: type some text.")
    ids, offsets = encode(lm, prompt)
    truncated = len(ids) > max_tokens
    ids, offsets = ids[:max_tokens], offsets[:max_tokens]

    input_ids = torch.tensor([ids], device=lm.device)
    with lm.lock, torch.inference_mode():
        out = lm.model(input_ids=input_ids, output_hidden_states=True, output_attentions=True, use_cache=False)
    if out.attentions is None or out.attentions[0] is None:
        raise RuntimeError("The model returned no attention weights (it must be loaded with eager attention).")

    hidden = torch.stack(out.hidden_states)[:, 0].float().cpu().numpy()  # (L+1, T, H)
    attentions = torch.stack(out.attentions)[:, 0].to(torch.float16).cpu().numpy()  # (L, heads, T, T)
    last_logits = out.logits[0, -1].float().cpu().numpy()  # (V,)
    return Trace(
        model_name=lm.name,
        prompt=prompt,
        token_ids=_frozen(np.asarray(ids, dtype=np.int64)),
        tokens=tuple(display_token(lm, i) for i in ids),
        offsets=_frozen(np.asarray(offsets, dtype=np.int64).reshape(-1, 2)),
        hidden_states=_frozen(hidden),
        attentions=_frozen(attentions),
        last_logits=_frozen(last_logits),
        truncated=truncated,
    )
