"""Continuations of a prompt: greedy or sampled, optionally steered, streamed token by token.

Generation is transformers' own `model.generate` (so speed and the greedy
result are exactly `model.generate(do_sample=False)`), with three additions:

- Reproducible sampling. `model.generate(do_sample=True)` draws from torch's
  *global* random generator, which every thread of the server shares. Here the
  draw is made by a logits processor holding its own `torch.Generator` seeded
  with `seed`: it samples one token from softmax(logits / T) restricted to the
  top-p nucleus (Holtzman et al. 2020), then leaves only that token's score
  finite, and `generate` runs in greedy mode, so its argmax picks exactly that
  token. Same seed, same prompt, same device → same text, whatever other
  sessions do meanwhile. (No top-k: only T and top-p shape the distribution.)
- Steering (Turner et al. 2023, "Activation Addition"): `Steer(layer, vector,
  strength)` adds strength * vector to hidden_states[layer] at every position,
  on the prompt pass and on every generated token. Layer l is Hugging Face's
  hidden_states[l], the input of block l = the output of block l − 1; 0 = the
  embedding output; 0 <= l < number of layers (core/model/parts.py). The edit is a
  forward pre-hook that lives only inside core.model.hooks.edited_residual (which
  holds the model's lock and removes the hook on exit, also on a Stop).
- Streaming: `on_token(token_id, text_so_far)` is called after each new token.
  Streamlit stops a script by raising inside it (at the next st.* call, so
  inside on_token); the exception leaves `generate`, the hooks are removed and
  the lock is released on the way out.

`next_token_table` is the distribution itself: softmax(logits / T) over the
vocabulary at the prompt's last position, its top k rows.

The logits processors, the steering addition and the remote top-k are in
core.intervene.sampling (torch only), shared with core.remote.generation: a
remote model (core.remote) runs each call as one NDIF job with that same code and
brings back only the new ids or the table's rows; its continuation arrives whole.

`from core import generate` gives the function; the module's other names (`generate_ids`,
`next_token_logits`, `top_tokens`) come with `from core.intervene.generation import …`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from transformers.generation.streamers import BaseStreamer

from core.intervene.sampling import add_delta, processors as _processors
from core.text.chat import prompt_ids
from core.model.hooks import Edit, check_layer, edited_residual
from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError, whole_number
from core.text.tokens import display_token, require_tokenizer
from core.running.trace import MAX_TRACE_TOKENS, last_logits_only

MAX_NEW_TOKENS = 512  # an upper bound for a page; notebooks can ask for up to this many
MAX_PROMPT_TOKENS = MAX_TRACE_TOKENS  # longer prompts are cut, as run_trace does

OnToken = Callable[[int, str], None]  # (new token id, all new text so far)


@dataclass(frozen=True)
class Steer:
    """Add `strength * vector` to hidden_states[layer] at every position while generating."""

    layer: int
    vector: np.ndarray | torch.Tensor  # (hidden,)
    strength: float


@dataclass(frozen=True)
class Generation:
    """A continuation: the new text and token ids only (the prompt is not repeated)."""

    text: str  # decoded new tokens, special tokens (e.g. the end-of-turn marker) left out
    token_ids: tuple[int, ...]  # the new token ids, as model.generate returns them (EOS included if reached)
    prompt_ids: tuple[int, ...]  # what the model was given
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int
    seconds: float
    ended: bool = False  # the model produced its end-of-text token (else it ran to max_new_tokens)
    prompt_truncated: bool = False  # the prompt was cut at MAX_PROMPT_TOKENS
    settings: dict = field(default_factory=dict)  # extra facts to show with the result (e.g. steering)

    @property
    def finished(self) -> str:
        """'end' if the model ended its text itself, 'length' if it ran to max_new_tokens."""
        return "end" if self.ended else "length"

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------- checks


def _is_remote(lm: LoadedModel) -> bool:
    """A core.remote model: it runs where lm.remote says (NDIF or its simulation), weights or not."""
    return getattr(lm, "remote", None) is not None


def _require_weights(lm: LoadedModel) -> None:
    require_tokenizer(lm)
    if not lm.has_weights and not _is_remote(lm):
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to generate.")


def _check_settings(max_new_tokens: int, temperature: float, top_p: float, seed: int) -> None:
    if whole_number(max_new_tokens) is None or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, not {max_new_tokens!r}.")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"The temperature must be a finite number ≥ 0 (0 = greedy), not {temperature!r}.")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top-p must be in (0, 1], not {top_p!r}.")
    if whole_number(seed) is None or seed < 0:
        raise ValueError(f"The seed must be a whole number ≥ 0, not {seed!r}.")


def steer_delta(lm: LoadedModel, steer: Steer) -> tuple[int, torch.Tensor]:
    """(layer, strength * vector in the model's dtype (hidden,)) after checking every part of `steer`."""
    layer = check_layer(lm, steer.layer)
    strength = float(steer.strength)
    if not math.isfinite(strength):
        raise ValueError(f"The steering strength is {strength}: choose a finite number.")
    vector = torch.as_tensor(np.asarray(steer.vector, dtype=np.float32) if not torch.is_tensor(steer.vector)
                             else steer.vector.detach().float().cpu())
    if vector.shape != (lm.hidden_size,):
        raise ValueError(f"The steering vector has shape {tuple(vector.shape)}; {lm.name} needs ({lm.hidden_size},).")
    if not torch.isfinite(vector).all():
        raise ValueError("The steering vector holds NaN or infinite values.")
    dtype = next(lm.model.parameters()).dtype
    delta = (strength * vector).to(dtype)  # (hidden,), in the model's number format
    if not torch.isfinite(delta).all():
        raise ValueError(f"strength × vector overflows {dtype} (strength {strength:g}): choose a smaller strength.")
    if not torch.isfinite(delta.float().pow(2).mean()):  # the layer norms square the state in float32
        raise ValueError(f"strength × vector is too large for {lm.name} (strength {strength:g}): the layer norms "
                         "would overflow and the output would be garbage. Choose a smaller strength.")
    return layer, delta


def steer_edit(lm: LoadedModel, steer: Steer) -> dict[int, Edit]:
    """The edit {layer: h -> h + strength * vector} for core.model.hooks, after checking every part of `steer`."""
    layer, delta = steer_delta(lm, steer)
    placed: dict[torch.device, torch.Tensor] = {}

    def add(hidden: torch.Tensor) -> torch.Tensor:  # (batch, T, hidden) -> same
        if hidden.device not in placed:  # moved once per device (a model may be split across devices)
            placed[hidden.device] = delta.to(device=hidden.device, dtype=hidden.dtype)
        return add_delta(hidden, placed[hidden.device])

    return {layer: add}


# ---------------------------------------------------------------- transformers plumbing


class _CallbackStreamer(BaseStreamer):
    """Calls on_token(token_id, text_so_far) for every new token (generate first puts the prompt: skipped)."""

    def __init__(self, tokenizer, on_token: OnToken):
        self.tokenizer = tokenizer
        self.on_token = on_token
        self.ids: list[int] = []
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.ids.append(int(token_id))
            self.on_token(int(token_id), self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def end(self) -> None:
        pass


def _eos_ids(lm: LoadedModel) -> set[int]:
    eos = lm.model.generation_config.eos_token_id
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return {int(i) for i in eos if i is not None}


def _model_ids(lm: LoadedModel, prompt: str, chat: bool) -> list[int]:
    """The prompt's ids; a chat prompt cut at MAX_PROMPT_TOKENS would lose its assistant turn, so it is refused."""
    ids = prompt_ids(lm, prompt, chat)
    if chat and len(ids) > MAX_PROMPT_TOKENS:
        raise ValueError(f"With the chat template, the prompt is {len(ids):,} tokens for {lm.name}; at most "
                         f"{MAX_PROMPT_TOKENS} are run here. Shorten it, or turn the chat template off.")
    return ids


def pad_id(lm: LoadedModel) -> int | None:
    """The id generate pads with: the generation config's, else the tokenizer's, else end-of-text."""
    config = lm.model.generation_config
    for candidate in (config.pad_token_id, lm.tokenizer.pad_token_id, config.eos_token_id):
        if isinstance(candidate, (list, tuple)):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    return None


# ---------------------------------------------------------------- public functions


def generate_ids(lm: LoadedModel, input_ids: list[int], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, edits: Mapping[int, Edit] | None = None,
                 on_token: OnToken | None = None) -> Generation:
    """Continue `input_ids` (exactly these ids, nothing added) with `lm.model.generate`.

    temperature 0: greedy, identical to model.generate(do_sample=False). temperature > 0: sampled
    from softmax(logits / T) within the top-p nucleus, with a generator of its own seeded by `seed`.
    `edits` ({layer: hidden -> edited hidden}) apply on the prompt pass and every new token; a remote
    model (core.remote) runs in one job and takes no `edits` (a Python function is not sent to NDIF:
    steer it with `generate(..., steer=)`).
    """
    if edits and _is_remote(lm):
        raise ValueError(f"{lm.name} runs remotely: only a Steer can be applied to it (generate(..., steer=...)).")
    return _generate_ids(lm, input_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         seed=seed, edits=edits, on_token=on_token)


def _generate_ids(lm: LoadedModel, input_ids: list[int], *, max_new_tokens: int, temperature: float, top_p: float,
                  seed: int, edits: Mapping[int, Edit] | None, on_token: OnToken | None,
                  steer: tuple[int, torch.Tensor] | None = None) -> Generation:
    """generate_ids, here or (a remote model) in one job; `steer`: (layer, delta (hidden,)) for a remote model."""
    _require_weights(lm)
    _check_settings(max_new_tokens, temperature, top_p, seed)
    max_new_tokens, seed = whole_number(max_new_tokens), whole_number(seed)
    if not input_ids:
        raise ValueError("The prompt has no tokens.")
    truncated = len(input_ids) > MAX_PROMPT_TOKENS
    input_ids = list(input_ids)[:MAX_PROMPT_TOKENS]

    start = time.perf_counter()
    if _is_remote(lm):  # one job; the ids arrive whole at its end (nnsight 0.8.1 streams nothing back)
        from core.remote.generation import remote_generate_ids

        new_ids = remote_generate_ids(lm, input_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                      top_p=top_p, seed=seed, steer=steer)
        if on_token is not None:
            for count in range(1, len(new_ids) + 1):
                on_token(new_ids[count - 1], lm.tokenizer.decode(list(new_ids[:count]), skip_special_tokens=True))
    else:
        processors = _processors(lm.name, temperature, top_p, seed, bool(edits))
        streamer = _CallbackStreamer(lm.tokenizer, on_token) if on_token is not None else None
        ids = torch.tensor([input_ids], device=lm.device)  # (1, T)
        with edited_residual(lm, edits or {}):  # holds the lock even without edits: forwards never interleave
            output = lm.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                logits_processor=processors, streamer=streamer, pad_token_id=pad_id(lm))
        new_ids = tuple(int(i) for i in output[0, len(input_ids):].tolist())
    seconds = time.perf_counter() - start
    return Generation(
        text=lm.tokenizer.decode(list(new_ids), skip_special_tokens=True), token_ids=new_ids,
        prompt_ids=tuple(input_ids), temperature=float(temperature), top_p=float(top_p), seed=seed,
        max_new_tokens=max_new_tokens, seconds=seconds, ended=bool(new_ids) and new_ids[-1] in _eos_ids(lm),
        prompt_truncated=truncated)


def generate(lm: LoadedModel, prompt: str, *, max_new_tokens: int = 20, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, chat: bool = False, steer: Steer | None = None,
             on_token: OnToken | None = None) -> Generation:
    """The continuation of `prompt` (new text only). chat=True wraps it in the model's chat template first."""
    _require_weights(lm)
    remote = _is_remote(lm)
    edits = steer_edit(lm, steer) if steer is not None and not remote else None
    delta = steer_delta(lm, steer) if steer is not None and remote else None
    generation = _generate_ids(lm, _model_ids(lm, prompt, chat), max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, seed=seed, edits=edits, on_token=on_token,
                               steer=delta)
    if steer is None:
        return generation
    return dataclasses.replace(generation, settings={"steer_layer": int(steer.layer), "steer_strength": float(steer.strength)})


def next_token_logits(lm: LoadedModel, prompt: str, *, chat: bool = False) -> np.ndarray:
    """The model's next-token scores after `prompt` (its last position), as float32: (vocab,)."""
    _require_weights(lm)
    ids = _model_ids(lm, prompt, chat)[:MAX_PROMPT_TOKENS]  # a plain prompt is cut, as run_trace cuts it
    if _is_remote(lm):  # one job; the whole row of scores comes back (vocab x 4 bytes)
        from core.remote.generation import remote_next_token

        return remote_next_token(lm, ids)["logits"].float().numpy()
    input_ids = torch.tensor([ids], device=lm.device)  # (1, T)
    with lm.lock, torch.inference_mode():
        out = lm.model(input_ids=input_ids, use_cache=False, **last_logits_only(lm, len(ids)))
    logits = out.logits  # (1, 1, vocab)
    return logits[0, -1].float().cpu().numpy()


def token_distribution(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T): (vocab,). T = 0 is the limit: all probability on the highest score (greedy)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"The temperature must be a finite number ≥ 0, not {temperature!r}.")
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    scaled = logits / temperature
    scaled -= scaled.max()  # the largest becomes 0: exp never overflows
    weights = np.exp(scaled)
    return weights / weights.sum()


def top_tokens(lm: LoadedModel, logits: np.ndarray, k: int = 10, temperature: float = 1.0) -> pd.DataFrame:
    """The k most likely next tokens under softmax(logits / T): rank, token, token_id, prob."""
    return _top_of(lm, token_distribution(logits, temperature), _check_k(k))


def _top_of(lm: LoadedModel, probs: np.ndarray, k: int) -> pd.DataFrame:
    """The k rows of the largest of `probs` (vocab,) float64."""
    k = min(k, probs.size)
    top = np.argpartition(-probs, k - 1)[:k]
    return _table(lm, top, probs[top], k)


def _check_k(k) -> int:
    count = whole_number(k)
    if count is None or count < 1:
        raise ValueError(f"k must be a whole number ≥ 1, not {k!r}.")
    return count


def _table(lm: LoadedModel, ids: np.ndarray, probs: np.ndarray, k: int) -> pd.DataFrame:
    """The k rows of the most likely of `ids` (n,) with `probs` (n,): by probability, ties by id (a stable order)."""
    order = np.lexsort((ids, -probs))[:k]
    top, probs = np.asarray(ids)[order].astype(np.int64), np.asarray(probs, dtype=np.float64)[order]
    return pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "token": [display_token(lm, int(i)) for i in top],
        "token_id": top,
        "prob": probs,
    })


def next_token_table(lm: LoadedModel, prompt: str, k: int = 10, temperature: float = 1.0, *,
                     chat: bool = False) -> pd.DataFrame:
    """Top-k next tokens after `prompt` with softmax(logits / T) probabilities: rank, token, token_id, prob.

    A remote model (core.remote) reduces inside its one job: only the top k (+ a few, for ties) come back.
    """
    if _is_remote(lm):
        from core.remote.generation import remote_next_token

        _require_weights(lm)
        k = _check_k(k)
        token_distribution(np.zeros(1), temperature)  # the same message for a bad temperature
        ids = _model_ids(lm, prompt, chat)[:MAX_PROMPT_TOKENS]
        top = remote_next_token(lm, ids, k=k, temperature=float(temperature))
        probs = np.zeros(int(top["size"]))  # (vocab,): the rows left out are ~0 (or exactly 0 where they underflow)
        probs[top["ids"].numpy()] = top["probs"].numpy()
        return _top_of(lm, probs, k)
    return top_tokens(lm, next_token_logits(lm, prompt, chat=chat), k, temperature)
