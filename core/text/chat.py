"""Chat templates: the exact text an instruct model sees when a prompt is sent as a user message.

Instruct models were fine-tuned on conversations wrapped in special markers
(SmolLM2: `<|im_start|>user … <|im_end|>`). The tokenizer carries that format
as a Jinja template; `tokenizer.apply_chat_template(messages,
add_generation_prompt=True)` renders the user message and opens the
assistant's turn, so the model's continuation is its answer. Base models
(the embedded Gemma 3 270M) have no template: asking for chat there is an error
with a message, not a silent plain prompt.

Every page that runs a prompt (next token, generation, Patchscopes, steering)
uses `prompt_ids` so the toggle means the same thing everywhere.
"""

from __future__ import annotations

from core.model.loaded import LoadedModel
from core.text.tokens import require_tokenizer


def has_chat_template(lm: LoadedModel) -> bool:
    """True when the tokenizer ships a chat template (instruct models)."""
    tokenizer = lm.tokenizer
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def chat_text(lm: LoadedModel, prompt: str) -> str:
    """`prompt` as one user message, rendered by the model's template, with the assistant's turn opened."""
    tokenizer = require_tokenizer(lm)
    if not has_chat_template(lm):
        raise ValueError(f"{lm.name} has no chat template (it is a base model, not an instruct model): "
                         "turn the chat template off.")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def model_text(lm: LoadedModel, prompt: str, chat: bool) -> str:
    """The text the model is given: the prompt itself, or its chat-template rendering."""
    return chat_text(lm, prompt) if chat else prompt


def prompt_ids(lm: LoadedModel, prompt: str, chat: bool = False) -> list[int]:
    """Token ids the model sees for `prompt`.

    Plain: tokenized as given, with the special tokens the tokenizer adds (BOS),
    exactly as run_trace does. Chat: the rendered template already holds every
    special token it wants (Gemma's writes `<bos>` itself), so none is added again.
    """
    tokenizer = require_tokenizer(lm)
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty: type some text.")
    if chat:
        return list(tokenizer(chat_text(lm, prompt), add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
