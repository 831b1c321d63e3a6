"""core/model/hooks.py: edits of hidden_states[l] match an independent computation, and leave nothing behind."""

import numpy as np
import pytest
import torch

from core import run_trace
from core.model.hooks import edited_residual

PROMPT = "the apple is green. what color is the apple?"


def _forward(lm, prompt=PROMPT):
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        return lm.model(input_ids=ids, output_hidden_states=True)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma", "tiny_gemma_vision"])
def test_identity_edit_changes_nothing(name, request):
    lm = request.getfixturevalue(name)
    plain = _forward(lm)
    with edited_residual(lm, {layer: (lambda h: h) for layer in range(lm.num_layers)}):
        edited = _forward(lm)
    assert torch.equal(plain.logits, edited.logits)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_added_vector_equals_a_hand_written_hook(tiny_llama, layer):
    """hidden_states[l] + v is the input of block l: compare with a pre-hook written here, on the block itself."""
    lm = tiny_llama
    vector = torch.linspace(-1, 1, lm.hidden_size)
    block = lm.model.model.layers[layer]  # the test's own knowledge of Llama's layout, independent of core.model.parts
    handle = block.register_forward_pre_hook(
        lambda module, args, kwargs: ((args[0] + vector, *args[1:]), kwargs) if args
        else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}), with_kwargs=True)
    try:
        expected = _forward(lm)
    finally:
        handle.remove()
    with edited_residual(lm, {layer: lambda h: h + vector}):
        ours = _forward(lm)
    torch.testing.assert_close(ours.logits, expected.logits, rtol=0, atol=0)
    # the edit acts from block `layer` on: earlier entries are untouched, the next one differs.
    # (Entry `layer` itself is reported edited or not depending on where transformers records it.)
    plain = _forward(lm)
    for entry in range(layer):
        assert torch.equal(plain.hidden_states[entry], ours.hidden_states[entry])
    assert not torch.equal(plain.hidden_states[layer + 1], ours.hidden_states[layer + 1])


def test_hooks_are_removed_and_lock_released_on_error(tiny_gemma):
    lm = tiny_gemma
    before = run_trace(lm, PROMPT)
    with pytest.raises(RuntimeError, match="boom"):
        with edited_residual(lm, {1: lambda h: h * 0}):
            assert lm.lock.locked()
            raise RuntimeError("boom")
    assert not lm.lock.locked()
    assert all(not layer._forward_pre_hooks for layer in lm.parts.layers)
    assert not lm.parts.lm_head._forward_pre_hooks
    after = run_trace(lm, PROMPT)
    np.testing.assert_array_equal(before.hidden_states, after.hidden_states)
    np.testing.assert_array_equal(before.attentions, after.attentions)


def test_layer_out_of_range_is_a_message(tiny_llama):
    with pytest.raises(ValueError, match=r"Layer 3 is out of range .* 0 … 2"):
        with edited_residual(tiny_llama, {3: lambda h: h}):
            pass
    assert not tiny_llama.lock.locked()
