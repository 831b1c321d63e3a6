"""Patchscopes: ask the model, in words, what one of its hidden states means.

Ghandeharioun et al. 2024, "Patchscopes: A Unifying Framework for Inspecting
Hidden Representations of Language Models". Take the hidden state of a token
of a *source* prompt ("Diana, Princess of Wales", at "Wales") at layer l,
and put it in place of the hidden state of a placeholder token of a *target*
("inspection") prompt, e.g. the few-shot token-identity prompt
`cat->cat; 1135->1135; hello->hello; x->`. Whatever the model then writes
after the target prompt is its own reading of that state: the identity prompt
asks it to repeat the token, an entity-description prompt to describe it.

Layer convention (Hugging Face's `hidden_states`, core/model/parts.py): layer l is
hidden_states[l], the input of block l = the output of block l − 1; 0 = the
embedding output; 0 <= l < number of layers. Replacing
hidden_states[t] at one position is a forward pre-hook on layers[t]
(core/model/hooks.py), active on the target prompt's forward pass only; the
generated tokens then read the patched prompt through the key/value cache.
The edit is core/intervene/patch_reduce.py's, the one a remote model's job makes
where it runs (core.remote.patchscopes: the whole sweep as one job, same checks and rows).

A sweep over source layers reads every layer's source state from one trace
(`run_trace`, or the page's cached trace) and runs the target once for all
layers: the target prompt is repeated as a batch, one row per source layer,
and row i is patched at its own layer only. Greedy decoding is
`model.generate(do_sample=False)` (core/intervene/generation.py uses the same).
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from core.text.chat import chat_text
from core.intervene.generation import pad_id
from core.model.hooks import Edit, check_layer, edited_residual
from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError, whole_number
from core.text.tokens import require_tokenizer
from core.running.trace import MAX_TRACE_TOKENS, Trace, last_logits_only, run_trace
from core.intervene.patch_reduce import replace_rows

DEFAULT_PLACEHOLDER = "x"
MAX_ROWS = 32  # rows of one batched generation: bounds memory (KV cache grows with rows × tokens)

IDENTITY_PROMPT = "cat->cat; 1135->1135; hello->hello; x->"
DESCRIPTION_PROMPT = ("Syria: Country in the Middle East, Leonardo DiCaprio: American actor, "
                      "Samsung: South Korean multinational electronics corporation, x:")


# ---------------------------------------------------------------- positions


def target_tokens(lm: LoadedModel, target_prompt: str, chat: bool = False) -> tuple[str, list[int], list[tuple[int, int]]]:
    """(text the model sees, its token ids, each token's character span), as core.text.chat.prompt_ids tokenizes it."""
    tokenizer = require_tokenizer(lm)
    if not target_prompt or not target_prompt.strip():
        raise ValueError("The target prompt is empty: type one with a placeholder, or click a preset.")
    text = chat_text(lm, target_prompt) if chat else target_prompt
    encoded = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
    return text, list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def last_token_of(text: str, offsets: Sequence[tuple[int, int]], needle: str, what: str) -> int:
    """Position of the token holding the last character of the LAST occurrence of `needle` in `text`."""
    if not needle:
        raise ValueError(f"The {what} is empty.")
    start = text.rfind(needle)
    if start < 0:
        raise ValueError(f'The {what} "{needle}" does not appear in "{_short(text)}".')
    last_char = start + len(needle) - 1
    for position in range(len(offsets) - 1, -1, -1):  # the last token covering that character
        begin, end = offsets[position]
        if begin <= last_char < end:
            return position
    raise ValueError(f'The {what} "{needle}" lies beyond the {MAX_TRACE_TOKENS} tokens that are run.')


def placeholder_position(lm: LoadedModel, target_prompt: str, placeholder: str = DEFAULT_PLACEHOLDER,
                         chat: bool = False) -> int:
    """The target token that receives the patch: the last token of the last occurrence of `placeholder`."""
    text, _, offsets = target_tokens(lm, target_prompt, chat)
    _check_placeholder(placeholder, target_prompt)
    return last_token_of(text, offsets, placeholder, "placeholder")


def word_position(trace: Trace, word: str) -> int:
    """The source token to read: the last token of the last occurrence of `word` in the trace's prompt."""
    if not word or not word.strip():
        raise ValueError("Pick a word of the source prompt.")
    if word not in trace.prompt:
        raise ValueError(f'"{word}" does not appear in the source prompt "{_short(trace.prompt)}".')
    return last_token_of(trace.prompt, [tuple(o) for o in trace.offsets], word, "word")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------- batched generation, one edit per row


def require_weights(lm: LoadedModel) -> None:
    require_tokenizer(lm)
    if not lm.has_weights:
        raise ModelLoadError(f"{lm.name} was loaded from its config only: load its weights to run a prompt.")


def generate_rows(lm: LoadedModel, input_ids: list[int], rows: int, edits: Mapping[int, Edit],
                  max_new_tokens: int, prefix: DynamicCache | None = None) -> list[tuple[int, ...]]:
    """Greedy continuations of `rows` copies of `input_ids`, with `edits` ({layer: batch edit}) active.

    Each edit sees the whole batch (rows, T', hidden) and decides which rows it touches; T' < T
    when a prefix cache is given, so edits locate positions from the end.
    `prefix`: prefix_cache() of the first P tokens, which are the same in every row and touched by
    no edit. Its keys and values are repeated for every row and only the other T - P tokens run:
    a 28-layer sweep over a 30-token target prompt with its placeholder near the end then runs
    ~30 + 28 x 2 prompt tokens instead of 28 x 30.
    Returns the new token ids of every row (EOS included when reached, padding dropped).
    """
    ids = torch.tensor([list(input_ids)] * rows, device=lm.device)  # (rows, T)
    pad = pad_id(lm)
    cache = None
    if prefix is not None:
        cache = copy.deepcopy(prefix)  # generate appends to its cache; the prefix serves every batch
        cache.batch_repeat_interleave(rows)
    with edited_residual(lm, edits), torch.inference_mode():
        output = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=max_new_tokens, pad_token_id=pad, past_key_values=cache,
                                   output_scores=True, return_dict_in_generate=True)
    first_scores = output.scores[0]  # (rows, vocab)
    if not torch.isfinite(first_scores).all():
        raise ValueError(f"The intervention made {lm.name}'s next-token scores NaN or infinite.")
    return cut_at_eos(lm, output.sequences[:, len(input_ids):].tolist())


def cut_at_eos(lm: LoadedModel, rows: list[list[int]]) -> list[tuple[int, ...]]:
    """Each row of new ids up to and including its first EOS (generation_config's): generate pads a row
    that finished before the others (remote ids are cut here too, with the local generation config)."""
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    result = []
    for row in rows:
        kept = []
        for token in row:
            kept.append(int(token))
            if token in eos:
                break
        result.append(tuple(kept))
    return result


def prefix_cache(lm: LoadedModel, prefix_ids: list[int]) -> DynamicCache | None:
    """The key/value cache of `prefix_ids` run once (one row); None where it cannot be shared.

    Attention layers keep (batch, heads, P, head_dim) keys and values, which repeat row-wise; a
    state-space or linear-attention layer keeps a running state that these classes do not cover,
    and such models run the whole prompt in every row.
    """
    if not prefix_ids or not lm.num_heads:  # nothing before the placeholder; no keys and values
        return None
    prefix = torch.tensor([list(prefix_ids)], device=lm.device)  # (1, P)
    with edited_residual(lm, {}), torch.inference_mode():  # the model's lock; no edit touches the prefix
        output = lm.model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True,
                          **last_logits_only(lm, prefix.shape[1]))
    cache = getattr(output, "past_key_values", None)
    if not isinstance(cache, DynamicCache) or any(type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer)
                                                   for layer in cache.layers):
        return None
    return cache


def prompt_pass_only(edit: Edit) -> Edit:
    """`edit` on the first forward pass (the prompt's), the identity on every generated token after it."""
    used = False

    def once(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal used
        if used:
            return hidden
        used = True
        return edit(hidden)

    return once


def _replace(rows: list[int], position: int, states: torch.Tensor, prompt_length: int) -> Edit:
    """On the prompt pass, set hidden[rows[i], position] = states[i] (patch_reduce.replace_rows).

    The pass may start after a cached shared prefix (generate_rows), so `position` is counted
    from the end of the `prompt_length`-token prompt.
    """

    def edit(hidden: torch.Tensor) -> torch.Tensor:  # (batch, T', hidden): the last T' prompt tokens
        return replace_rows(hidden, rows, position - (prompt_length - hidden.shape[1]), states)

    return edit


def row_plan(chunk: Sequence[int], target_layer: int | None) -> dict[int, list[int]]:
    """{layer patched: rows patched there} for one batch, row i holding source layer chunk[i]; by layer."""
    plan: dict[int, list[int]] = {}
    for row, layer in enumerate(chunk):
        plan.setdefault(layer if target_layer is None else target_layer, []).append(row)
    return dict(sorted(plan.items()))  # in the order the blocks run (nnsight reads them in that order)


# ---------------------------------------------------------------- Patchscopes


def patchscope_from_trace(lm: LoadedModel, source: Trace, source_position: int, target_prompt: str, *,
                          layers: Sequence[int] | None = None, target_layer: int | None = None,
                          placeholder: str = DEFAULT_PLACEHOLDER, max_new_tokens: int = 10, chat: bool = False,
                          on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """`patchscope` with the source states read from an existing trace (a layer sweep never reruns the source).

    chat=True wraps the target prompt in the model's chat template (the placeholder is found in the result).
    on_progress(done_layers, total_layers) is called after each batch of layers. A remote model reruns
    the trace's token ids where it runs, in the sweep's one job (core.remote.patchscopes).
    """
    if getattr(lm, "remote", None) is not None:  # nnsight only once a remote model is used
        from core.remote.patchscopes import remote_patchscope

        return remote_patchscope(lm, source, source_position, target_prompt, layers, target_layer, placeholder,
                                 max_new_tokens, chat)
    require_weights(lm)
    layers, target_layer, max_new_tokens, source_position, ids, position = checked_sweep(
        lm, len(source.token_ids), source_position, target_prompt, layers, target_layer, placeholder,
        max_new_tokens, chat)
    states = torch.from_numpy(np.ascontiguousarray(source.hidden_states[:, source_position]))  # (L+1, hidden)
    # Every token before the placeholder is the same in every row and unchanged by the patch: run once.
    prefix = prefix_cache(lm, ids[:position])
    answers: list[tuple[int, ...]] = []
    for start in range(0, len(layers), MAX_ROWS):
        chunk = layers[start:start + MAX_ROWS]
        edits = {t: prompt_pass_only(_replace(rows, position, states[[chunk[r] for r in rows]], len(ids)))
                 for t, rows in row_plan(chunk, target_layer).items()}
        answers += generate_rows(lm, ids, len(chunk), edits, max_new_tokens, prefix=prefix)
        if on_progress is not None:
            on_progress(start + len(chunk), len(layers))
    return answer_table(lm, layers, answers)


def checked_sweep(lm: LoadedModel, length: int, source_position, target_prompt: str, layers, target_layer,
                  placeholder: str, max_new_tokens, chat: bool) -> tuple[list[int], int | None, int, int, list, int]:
    """The checked settings of a sweep over a `length`-token source: (layers, target layer, new tokens,
    source position in 0 … length - 1, the target's token ids, the placeholder's position); local and remote."""
    layers = list(range(lm.num_layers)) if layers is None else [check_layer(lm, l) for l in layers]
    if not layers:
        raise ValueError("Choose at least one source layer.")
    if target_layer is not None:
        target_layer = check_layer(lm, target_layer)
    count, position = whole_number(max_new_tokens), whole_number(source_position)
    if count is None or not 1 <= count <= 200:
        raise ValueError(f"max_new_tokens must be a whole number from 1 to 200, not {max_new_tokens!r}.")
    if position is None:
        raise ValueError(f"The source position must be a whole number, not {source_position!r} "
                         "(word_position(trace, word) finds the position of a word).")
    if not -length <= position < length:
        raise ValueError(f"Source position {position} is out of range: the source prompt has {length} tokens "
                         f"(0 … {length - 1}).")
    _check_placeholder(placeholder, target_prompt)
    text, ids, offsets = target_tokens(lm, target_prompt, chat)
    ids, offsets = ids[:MAX_TRACE_TOKENS], offsets[:MAX_TRACE_TOKENS]
    return layers, target_layer, count, position % length, ids, last_token_of(text, offsets, placeholder, "placeholder")


def _check_placeholder(placeholder: str, target_prompt: str) -> None:
    if placeholder and placeholder not in target_prompt:
        raise ValueError(f'The placeholder "{placeholder}" does not appear in the target prompt '
                         f'"{_short(target_prompt)}": write it where the hidden state should go.')


def answer_table(lm: LoadedModel, layers: list[int], answers: list[tuple[int, ...]]) -> pd.DataFrame:
    """patchscope's DataFrame: layer, the new text (special tokens dropped), the new ids."""
    texts = [(layer, lm.tokenizer.decode(list(new_ids), skip_special_tokens=True), new_ids)
             for layer, new_ids in zip(layers, answers)]
    return pd.DataFrame(texts, columns=["layer", "text", "token_ids"])


def patchscope(lm: LoadedModel, source_prompt: str, source_position: int, target_prompt: str, *,
               layers: Sequence[int] | None = None, target_layer: int | None = None,
               placeholder: str = DEFAULT_PLACEHOLDER, max_new_tokens: int = 10, chat: bool = False) -> pd.DataFrame:
    """For each source layer l: hidden_states[l][source_position] of `source_prompt`, patched into
    hidden_states[target_layer or l] of `target_prompt` at the last token of the last `placeholder`,
    on the prompt's forward pass only; then greedy generation.

    hidden_states[l] is the input of block l = the output of block l − 1 (0 = the embedding output), so
    0 <= l < layers. hidden_states[L], the last block's output, is left out: a patch goes in as the input
    of a block, and no block reads hidden_states[L] (in most families it is also taken after the final
    norm, so it is not a residual-stream state of the same kind). `word_position(run_trace(lm, prompt),
    word)` gives the source position of a word. chat=True wraps the target prompt in the model's chat
    template (the placeholder is found in the wrapped text); the source prompt is read as given.
    A remote model (core.remote) runs the whole sweep as ONE job there; only the new ids come back.

    Returns a DataFrame `layer`, `text` (new text only), `token_ids` (new ids): one row per source layer.
    """
    if getattr(lm, "remote", None) is not None:  # the source's ids from the local tokenizer, run there
        from core.remote.patchscopes import remote_patchscope

        return remote_patchscope(lm, source_prompt, source_position, target_prompt, layers, target_layer,
                                 placeholder, max_new_tokens, chat)
    require_weights(lm)
    _check_placeholder(placeholder, target_prompt or "")  # before the source prompt is run
    return patchscope_from_trace(lm, run_trace(lm, source_prompt), source_position, target_prompt, layers=layers,
                                 target_layer=target_layer, placeholder=placeholder, max_new_tokens=max_new_tokens,
                                 chat=chat)


def answer_changes(table: pd.DataFrame) -> pd.Series:
    """True on the rows whose text differs from the previous layer's (the first row counts as a change)."""
    texts = table["text"].str.strip()
    return texts.ne(texts.shift()).rename("changed")


def first_answer(text: str, separators: str = ";,\n") -> str:
    """The continuation up to its first separator: the answer a few-shot prompt asks for."""
    cut = min((i for i in (text.find(s) for s in separators) if i >= 0), default=len(text))
    return text[:cut].strip()
