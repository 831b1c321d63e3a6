"""One forward pass per (model, prompt), frozen into a `Trace` every analysis reads.

Like TransformerLens' `run_with_cache`, but the result is plain NumPy:
hidden states of every layer, attention weights of every head, and the
model's own next-token logits at the last position. Arrays are read-only, so
a trace can be shared between pages and browser sessions.

Conventions (Hugging Face's):
- hidden_states[0] is the embedding output (Gemma multiplies it by sqrt(hidden));
  hidden_states[l] is the input of block l = the output of block l − 1
  (core/model/parts.py); the last entry already has the
  model's final norm applied, so lm_head(hidden_states[-1]) == logits. OPT-350m
  projects its last hidden state to the narrower word-vector width
  (`project_out`); the trace keeps it in the stack's own width (the input of
  `project_out`) so every entry has the same shape.
- attentions[l, h, i, j] is how much token i attends to token j in layer l, head h.
  A model without attention weights (a state-space model such as Mamba, or an
  attention implementation that does not return them) has attentions None;
  hidden states, logits and the lens still work.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass

import numpy as np
import torch

from core.model.hooks import recorded_input
from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError
from core.text.tokens import display_token, encode, require_tokenizer

MAX_TRACE_TOKENS = 512  # longer prompts are cut (attention is T×T per head)


@dataclass(frozen=True, eq=False)
class Trace:
    model_name: str
    prompt: str
    token_ids: np.ndarray  # (T,) int64
    tokens: tuple[str, ...]  # readable text of each token
    offsets: np.ndarray  # (T, 2) character span of each token in the prompt; (0, 0) for BOS
    hidden_states: np.ndarray  # (layers + 1, T, hidden) float32
    attentions: np.ndarray | None  # (layers, heads, T, T) float16; None: the architecture has no attention weights
    last_logits: np.ndarray  # (vocab,) float32: the model's own next-token logits at the last position
    truncated: bool  # the prompt had more than MAX_TRACE_TOKENS tokens
    total_tokens: int | None = None  # tokens of the whole prompt (more than len(tokens) when truncated)

    @property
    def num_layers(self) -> int:
        return self.hidden_states.shape[0] - 1

    @property
    def nbytes(self) -> int:
        arrays = (self.token_ids, self.offsets, self.hidden_states, self.attentions, self.last_logits)
        return sum(a.nbytes for a in arrays if a is not None)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def out_of_memory_message(lm: LoadedModel, tokens: int) -> str:
    """What to do when the accelerator ran out of memory halfway through a forward pass.

    The partial activations are freed (the exception dropped them); the cache allocator's
    blocks are returned too, so the other model and later prompts are not starved.
    """
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    memory = "memory" if lm.device == "cpu" else "GPU memory"
    return (f"{lm.name} ran out of {memory} on this {tokens}-token prompt (hidden states and every "
            "head's attention are kept for each layer). Use a shorter prompt, unload the other model "
            "on Home, or choose 'auto' / 'offload to disk' in the sidebar.")


def last_logits_only(lm: LoadedModel, length: int) -> dict:
    """Forward-pass keyword that keeps only the last position's logits, where the model accepts it.

    It skips the LM head for the other positions (10-15% of a 3B forward at 128 tokens). The last
    position is given as an index tensor, not as `logits_to_keep=1`: the integer makes transformers
    slice `hidden[:, -1:, :]`, a (1, 1, H) view with the stride of the whole sequence, and torch's CPU
    bf16 linear takes a slow path on it (Llama-3.2-3B head: 3.8 s instead of 0.044 s for a fresh
    (1, 1, H) tensor). Indexing makes that fresh tensor. Models without the argument compute every row.
    """
    if "logits_to_keep" not in inspect.signature(lm.model.forward).parameters:
        return {}
    return {"logits_to_keep": torch.tensor([length - 1], device=lm.device)}


def _forward(lm: LoadedModel, input_ids: torch.Tensor):
    """The model's output and its hidden states in core's convention (L + 1 tensors (1, T, H)).

    Hugging Face's tuple already is that convention, except in two families, where the missing entry is
    recorded as the input of a module: OPT-350m's last state before `project_out` (Hugging Face returns it
    projected), and a state-space model's embedding output (BLOCK_OUTPUT_STATES: its tuple holds block
    outputs, hidden_states[l] = the output of block l, so the embedding is the input of block 0 and the
    last block's un-normed output is dropped).
    """
    kwargs = dict(input_ids=input_ids, output_hidden_states=True, output_attentions=lm.num_heads > 0,
                  use_cache=False)
    kwargs.update(last_logits_only(lm, input_ids.shape[1]))
    project_out = lm.parts.project_out
    if lm.parts.layout.states_skip_embedding:
        with recorded_input(lm, lm.parts.layers[0]) as seen, torch.inference_mode():  # holds lm.lock
            out = lm.model(**kwargs)
        return out, (seen[-1], *out.hidden_states[:-2], out.hidden_states[-1])
    if project_out is None:
        with lm.lock, torch.inference_mode():
            out = lm.model(**kwargs)
        return out, out.hidden_states
    with recorded_input(lm, project_out) as seen, torch.inference_mode():  # holds lm.lock
        out = lm.model(**kwargs)
    return out, (*out.hidden_states[:-1], seen[-1])


def run_trace(lm: LoadedModel, prompt: str, max_tokens: int = MAX_TRACE_TOKENS) -> Trace:
    """Run `prompt` through `lm` once and keep everything the pages read.

    A remote model (core.remote) runs it as one job and sends every array back (core.remote.trace),
    refused before sending when that passes the 64 MB a remote request may bring back.
    """
    require_tokenizer(lm)
    remote = getattr(lm, "remote", None) is not None
    if not lm.has_weights and not remote:
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to run a prompt.")
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty: type some text.")
    ids, offsets = encode(lm, prompt)
    total_tokens = len(ids)
    truncated = total_tokens > max_tokens
    ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    if remote:
        from core.remote.trace import trace_job

        arrays = trace_job(lm, ids)
        return _trace_of(lm, prompt, ids, offsets, arrays["hidden"], arrays["attentions"], arrays["logits"],
                         truncated, total_tokens)

    # lm.device is where the embedding layer computes (the first GPU of a model spread by accelerate).
    input_ids = torch.tensor([ids], device=lm.device)
    try:
        out, entries = _forward(lm, input_ids)
    except torch.OutOfMemoryError:
        raise ModelLoadError(out_of_memory_message(lm, len(ids))) from None
    # No weights: a state-space model, or an attention implementation that does not expose them (sdpa and
    # flash attention return an empty tuple). Hidden states and logits are still exact; core.running.attention says why.
    weights = getattr(out, "attentions", None)
    readable = bool(weights) and all(w is not None for w in weights)

    hidden = torch.stack(entries)[:, 0].float().cpu().numpy()  # (L+1, T, H)
    attentions = torch.stack(weights)[:, 0].to(torch.float16).cpu().numpy() if readable else None  # (L, heads, T, T)
    last_logits = out.logits[0, -1].float().cpu().numpy()  # (V,)
    return _trace_of(lm, prompt, ids, offsets, hidden, attentions, last_logits, truncated, total_tokens)


def _trace_of(lm, prompt, ids, offsets, hidden, attentions, last_logits, truncated, total_tokens) -> Trace:
    return Trace(
        model_name=lm.name,
        prompt=prompt,
        token_ids=_frozen(np.asarray(ids, dtype=np.int64)),
        tokens=tuple(display_token(lm, i) for i in ids),
        offsets=_frozen(np.asarray(offsets, dtype=np.int64).reshape(-1, 2)),
        hidden_states=_frozen(hidden),
        attentions=None if attentions is None else _frozen(attentions),
        last_logits=_frozen(last_logits),
        truncated=truncated,
        total_tokens=total_tokens,
    )
