"""core/intervene/patchscopes.py against independent computations: plain transformers, the test's own hooks."""


import numpy as np
import pytest
import torch

from core import run_trace
from core.intervene.patchscopes import (DESCRIPTION_PROMPT, IDENTITY_PROMPT, answer_changes, first_answer, patchscope,
                             patchscope_from_trace, placeholder_position, word_position)

SOURCE = "Diana, Princess of Wales"


def _layers(lm):
    """The test's own knowledge of where each tiny architecture keeps its blocks (not core.model.parts)."""
    inner = lm.model.model
    return getattr(inner, "language_model", inner).layers


def _greedy(lm, ids, max_new_tokens, hook_layer=None, hook=None):
    """model.generate(do_sample=False) on `ids`, with an optional forward pre-hook of the test's own."""
    handle = None
    if hook is not None:
        handle = _layers(lm)[hook_layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            out = lm.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=lm.tokenizer.pad_token_id)
    finally:
        if handle is not None:
            handle.remove()
    return tuple(out[0, len(ids):].tolist())


def _patch_once(position, state):
    """Replace hidden[0, position] by `state` on the first call only (the prompt's pass)."""
    calls = []

    def hook(module, args, kwargs):
        if calls:
            return None
        calls.append(1)
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        hidden[0, position] = torch.as_tensor(state, dtype=hidden.dtype)
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    return hook


def _cut_at_eos(lm, ids):
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    kept = []
    for token in ids:
        kept.append(token)
        if token in eos:
            break
    return tuple(kept)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma", "tiny_gemma_vision"])
def test_each_row_equals_the_tests_own_hook(name, request):
    lm = request.getfixturevalue(name)
    target = "the apple is x. what color is the apple?"
    table = patchscope(lm, SOURCE, 3, target, max_new_tokens=6)
    assert list(table["layer"]) == list(range(lm.num_layers))
    source = lm.tokenizer(SOURCE)["input_ids"]
    with torch.inference_mode():
        states = lm.model(input_ids=torch.tensor([source]), output_hidden_states=True).hidden_states
    ids = lm.tokenizer(target)["input_ids"]
    position = max(i for i, (s, e) in enumerate(lm.tokenizer(target, return_offsets_mapping=True)["offset_mapping"])
                   if s <= target.rfind("x") < e)
    for layer, token_ids in zip(table["layer"], table["token_ids"]):
        expected = _greedy(lm, ids, 6, layer, _patch_once(position, states[layer][0, 3]))
        assert token_ids == _cut_at_eos(lm, expected), f"layer {layer}"


def test_target_layer_patches_every_source_layer_into_one_layer(tiny_llama):
    lm = tiny_llama
    target = "how are x?"
    table = patchscope(lm, SOURCE, -1, target, layers=[0, 2], target_layer=1, max_new_tokens=5)
    source = lm.tokenizer(SOURCE)["input_ids"]
    with torch.inference_mode():
        states = lm.model(input_ids=torch.tensor([source]), output_hidden_states=True).hidden_states
    ids = lm.tokenizer(target)["input_ids"]
    position = placeholder_position(lm, target)
    for layer, token_ids in zip(table["layer"], table["token_ids"]):
        assert token_ids == _cut_at_eos(lm, _greedy(lm, ids, 5, 1, _patch_once(position, states[layer][0, -1])))


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_patching_a_prompt_into_itself_changes_nothing(name, request):
    lm = request.getfixturevalue(name)
    prompt = "the apple is green. what color is x apple"
    position = placeholder_position(lm, prompt)
    table = patchscope(lm, prompt, position, prompt, max_new_tokens=8)
    plain = _cut_at_eos(lm, _greedy(lm, lm.tokenizer(prompt)["input_ids"], 8))
    assert all(ids == plain for ids in table["token_ids"])


@pytest.mark.embedded
def test_patching_a_prompt_into_itself_changes_nothing_on_smollm(smollm):
    position = placeholder_position(smollm, IDENTITY_PROMPT)
    table = patchscope(smollm, IDENTITY_PROMPT, position, IDENTITY_PROMPT, layers=[0, 14, 29], max_new_tokens=6)
    plain = _cut_at_eos(smollm, _greedy(smollm, smollm.tokenizer(IDENTITY_PROMPT)["input_ids"], 6))
    assert all(ids == plain for ids in table["token_ids"])


def test_positions_are_the_last_token_of_the_last_occurrence(tiny_llama):
    lm = tiny_llama
    prompt = "x is green. what color is the x?"
    offsets = lm.tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    position = placeholder_position(lm, prompt)
    assert offsets[position][0] <= prompt.rindex("x") < offsets[position][1]
    trace = run_trace(lm, "the apple is green. what color is the apple?")
    pos = word_position(trace, "apple")
    assert trace.offsets[pos][1] == len("the apple is green. what color is the apple")
    assert pos == len(trace.tokens) - 2  # the last "apple" token, before "?"


@pytest.mark.embedded
def test_placeholder_of_the_papers_prompts_on_the_embedded_pair(smollm, gemma270m):
    for lm in (smollm, gemma270m):
        ids = lm.tokenizer(IDENTITY_PROMPT)["input_ids"]
        assert lm.tokenizer.decode([ids[placeholder_position(lm, IDENTITY_PROMPT)]]) == " x"
        ids = lm.tokenizer(DESCRIPTION_PROMPT)["input_ids"]
        assert lm.tokenizer.decode([ids[placeholder_position(lm, DESCRIPTION_PROMPT)]]).strip() == "x"


@pytest.mark.parametrize("call, message", [
    (lambda lm: patchscope(lm, SOURCE, 0, "no placeholder here"), r'placeholder "x" does not appear in the target'),
    (lambda lm: patchscope(lm, SOURCE, 0, "x here", placeholder="@@"), r'placeholder "@@" does not appear'),
    (lambda lm: patchscope(lm, SOURCE, 0, "x", layers=[3]), r"Layer 3 is out of range .* 0 … 2"),
    (lambda lm: patchscope(lm, SOURCE, 0, "x", target_layer=-1), r"Layer -1 is out of range"),
    (lambda lm: patchscope(lm, SOURCE, 99, "x"), r"Source position 99 is out of range"),
    (lambda lm: patchscope(lm, "", 0, "x"), r"prompt is empty"),
    (lambda lm: patchscope(lm, SOURCE, 0, "x", layers=[]), r"at least one source layer"),
    (lambda lm: word_position(run_trace(lm, SOURCE), "Charles"), r'"Charles" does not appear in the source prompt'),
])
def test_bad_input_is_a_message(tiny_llama, tiny_gemma, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_llama)
    assert not tiny_llama.lock.locked()
    # the other model keeps working
    assert len(patchscope(tiny_gemma, SOURCE, -1, "x", layers=[1], max_new_tokens=2)) == 1


def test_sweep_reads_the_given_trace_and_reports_progress(tiny_gemma, monkeypatch):
    import core.intervene.patchscopes as module

    lm = tiny_gemma
    trace = run_trace(lm, SOURCE)
    monkeypatch.setattr(module, "MAX_ROWS", 2)  # 3 layers -> 2 batches
    monkeypatch.setattr(module, "run_trace", lambda *a, **k: pytest.fail("the source must not be run again"))
    seen = []
    table = patchscope_from_trace(lm, trace, -1, "x ->", max_new_tokens=3, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]
    assert list(table["layer"]) == [0, 1, 2]


def test_answer_helpers():
    import pandas as pd

    table = pd.DataFrame({"layer": [0, 1, 2, 3], "text": [" Wales; a", "Wales; b", " Welsh;", " Welsh;"]})
    assert list(answer_changes(table.assign(text=table["text"].map(first_answer)))) == [True, False, True, False]
    assert first_answer(" Country in the UK, China: China") == "Country in the UK"


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_the_target_prompt_before_the_placeholder_runs_once_for_all_rows(name, request):
    """The tokens before the placeholder are the same in every row and untouched by the patch, so a
    sweep runs them once and repeats their key/value cache: the test's own hook on the first block
    sees (1, P) for that prefix, then (rows, T - P) for the rest of the prompt, then (rows, 1) per
    new token. The rows' answers equal the test's own single-row runs (test_each_row_equals_…)."""
    lm = request.getfixturevalue(name)
    rows, new_tokens = lm.num_layers, 3
    position = placeholder_position(lm, IDENTITY_PROMPT)
    length = len(lm.tokenizer(IDENTITY_PROMPT)["input_ids"])
    assert 0 < position < length - 1
    shapes = []
    handle = _layers(lm)[0].register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple((args[0] if args else kwargs["hidden_states"]).shape[:2])),
        with_kwargs=True)
    try:
        table = patchscope(lm, SOURCE, -1, IDENTITY_PROMPT, max_new_tokens=new_tokens)
    finally:
        handle.remove()
    source_pass = shapes.pop(0)  # run_trace of the source prompt
    assert source_pass[0] == 1
    assert shapes[:2] == [(1, position), (rows, length - position)]
    assert all(shape == (rows, 1) for shape in shapes[2:]) and len(shapes) - 2 <= new_tokens - 1
    assert len(table) == rows


def test_the_prefix_runs_once_even_when_the_sweep_takes_several_batches(tiny_llama, monkeypatch):
    import core.intervene.patchscopes as patchscopes

    monkeypatch.setattr(patchscopes, "MAX_ROWS", 1)  # one batch per layer
    lm = tiny_llama
    position = placeholder_position(lm, IDENTITY_PROMPT)
    length = len(lm.tokenizer(IDENTITY_PROMPT)["input_ids"])
    source = run_trace(lm, SOURCE)
    shapes = []
    handle = _layers(lm)[0].register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple((args[0] if args else kwargs["hidden_states"]).shape[:2])),
        with_kwargs=True)
    try:
        table = patchscope_from_trace(lm, source, -1, IDENTITY_PROMPT, max_new_tokens=2)
    finally:
        handle.remove()
    assert shapes.count((1, position)) == 1  # the prefix pass
    assert shapes.count((1, length - position)) == lm.num_layers  # each batch's prompt pass after it
    unbatched = [_greedy(lm, lm.tokenizer(IDENTITY_PROMPT)["input_ids"], 2, layer, _patch_once(
        position, np.array(source.hidden_states[layer, -1]))) for layer in range(lm.num_layers)]
    assert table["token_ids"].tolist() == [_cut_at_eos(lm, ids) for ids in unbatched]
