"""What the causal analyses share: checked prompts, the token an answer string stands for, and a batched
forward pass that returns only the last position's logits.

Every forward here runs inside `core.model.hooks.hooked`, which holds the model's lock, so the callers'
hooks (or none) are the only ones attached while it runs.
"""

from __future__ import annotations

import torch

from core.model.errors import ModelLoadError
from core.model.loaded import LoadedModel
from core.running.trace import last_logits_only
from core.text.tokens import display_token, encode, require_tokenizer

MAX_CAUSE_TOKENS = 128  # longer prompts are refused: the patching grid grows with layers × positions


def require_runnable(lm: LoadedModel) -> None:
    require_tokenizer(lm)
    if not lm.has_weights and getattr(lm, "remote", None) is None:  # a remote model runs where its weights are
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to run a prompt.")


def encoded_prompt(lm: LoadedModel, prompt: str, role: str = "prompt") -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids (BOS as the tokenizer adds it, as in run_trace) and character spans, or a message."""
    require_runnable(lm)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"The {role} is empty: type some text.")
    ids, offsets = encode(lm, prompt)
    if len(ids) > MAX_CAUSE_TOKENS:
        raise ValueError(f"The {role} is {len(ids)} tokens long in {lm.name}; these analyses take at most "
                         f"{MAX_CAUSE_TOKENS}. Use a shorter prompt.")
    return ids, offsets


def first_token(lm: LoadedModel, text: str, role: str) -> tuple[int, str | None]:
    """The token `text` stands for: its first token, tokenized as written (no BOS), and a note when the
    text is longer than one token (which one is used)."""
    if not isinstance(text, str) or text == "":
        raise ValueError(f"The {role} is empty: type a word (with its leading space where the word follows "
                         "another, e.g. ' Paris').")
    ids = require_tokenizer(lm)(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"The {role} {text!r} gives no token in {lm.name}.")
    note = None
    if len(ids) > 1:
        note = (f"The {role} {text!r} is {len(ids)} tokens in {lm.name}; the first, "
                f"{display_token(lm, ids[0])!r}, is used.")
    return int(ids[0]), note


def by_position(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """`hidden` as (batch, T, hidden), a view of the same numbers. OPT's MLP works on (batch · T, hidden)."""
    return hidden.view(-1, length, hidden.shape[-1])


def ids_tensor(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    """(batch, T) on the device where the embedding layer computes."""
    return torch.tensor(rows, device=lm.device)


def last_logits(lm: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The model's own logits at the last position of each row: (batch, vocab) float32.

    Call inside `hooked(lm, ...)` (the lock is held there). Gradients flow when grad mode is on.
    """
    out = lm.model(input_ids=input_ids, use_cache=False, **last_logits_only(lm, input_ids.shape[1]))
    return out.logits[:, -1].float()
