"""core/intervene/steering.py against independent computations: plain transformers forwards and the test's own hooks."""

import importlib
import threading

import numpy as np
import pytest
import torch

from core import run_trace
from core.intervene.patchscopes import patchscope
from core.intervene.steering import (check_steer, directions_from_traces, layer_sweep, steered_continuations, steering_vector,
                           target_ids)

POSITIVE = ["the apple is green.", "I ate an apple for breakfast", "how are you?"]
NEGATIVE = ["nice to meet you", "The capital of France is Paris."]
HELD_OUT = ["what color is the apple?", "how about you?"]


def _layers(lm):
    inner = lm.model.model
    return getattr(inner, "language_model", inner).layers


def _states(lm, prompt):
    """hidden_states of a plain forward pass: tuple of (1, T, hidden)."""
    with torch.inference_mode():
        return lm.model(input_ids=torch.tensor([lm.tokenizer(prompt)["input_ids"]]), output_hidden_states=True).hidden_states


def _adding(vector):
    def hook(module, args, kwargs):
        if args:
            return (args[0] + vector.to(args[0].dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}

    return hook


def _log_probs(lm, prompt, layer=None, vector=None):
    handle = _layers(lm)[layer].register_forward_pre_hook(_adding(vector), with_kwargs=True) if vector is not None else None
    try:
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([lm.tokenizer(prompt)["input_ids"]])).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()
    return torch.log_softmax(logits.float(), -1)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma", "tiny_gemma_vision"])
def test_steering_vector_is_the_mean_difference(name, request):
    lm = request.getfixturevalue(name)
    for layer in range(lm.num_layers):
        pos = torch.stack([_states(lm, p)[layer][0, -1] for p in POSITIVE]).double().mean(0)
        neg = torch.stack([_states(lm, p)[layer][0, -1] for p in NEGATIVE]).double().mean(0)
        ours = steering_vector(lm, POSITIVE, NEGATIVE, layer)
        assert ours.shape == (lm.hidden_size,)
        np.testing.assert_allclose(ours, (pos - neg).numpy(), rtol=1e-5, atol=1e-6)


def test_sweep_equals_the_tests_own_hook(tiny_gemma):
    lm = tiny_gemma
    directions = directions_from_traces([run_trace(lm, p) for p in POSITIVE], [run_trace(lm, p) for p in NEGATIVE])
    words_a, words_b = ["apple"], ["you"]
    first, second = target_ids(lm, words_a), target_ids(lm, words_b)
    assert first and second
    table = layer_sweep(lm, directions, HELD_OUT, 3.0, words_a, words_b)
    for layer in range(lm.num_layers):
        vector = 3.0 * torch.from_numpy(directions[layer])
        shifts, kls = [], []
        for prompt in HELD_OUT:
            base, steered = _log_probs(lm, prompt), _log_probs(lm, prompt, layer, vector)
            odds = [torch.logsumexp(lp[first], 0) - torch.logsumexp(lp[second], 0) for lp in (base, steered)]
            shifts.append(float(odds[1] - odds[0]))
            kls.append(float((base.exp() * (base - steered)).sum()))
        row = table[table["layer"] == layer].iloc[0]
        assert row["shift"] == pytest.approx(np.mean(shifts), abs=1e-4)
        assert row["kl"] == pytest.approx(max(np.mean(kls), 0.0), abs=1e-5)
        assert row["relative_depth"] == layer / lm.num_layers


def test_strength_zero_changes_nothing(tiny_llama):
    lm = tiny_llama
    directions = np.random.default_rng(0).normal(size=(lm.num_layers, lm.hidden_size)).astype(np.float32)
    table = layer_sweep(lm, directions, HELD_OUT, 0.0, ["apple"], ["you"])
    np.testing.assert_allclose(table["shift"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["kl"], 0.0, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_steered_continuation_equals_the_tests_own_hook(name, request):
    lm = request.getfixturevalue(name)
    directions = directions_from_traces([run_trace(lm, p) for p in POSITIVE], [run_trace(lm, p) for p in NEGATIVE])
    prompt = HELD_OUT[0]
    table = steered_continuations(lm, directions, prompt, -5.0, max_new_tokens=6)
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    eos = lm.model.generation_config.eos_token_id
    for layer, token_ids in zip(table["layer"], table["token_ids"]):
        handle = _layers(lm)[layer].register_forward_pre_hook(_adding(-5.0 * torch.from_numpy(directions[layer])),
                                                              with_kwargs=True)
        try:
            with torch.inference_mode():
                out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=6, pad_token_id=lm.tokenizer.pad_token_id)
        finally:
            handle.remove()
        expected = out[0, ids.shape[1]:].tolist()
        if eos in expected:
            expected = expected[:expected.index(eos) + 1]
        assert list(token_ids) == expected, f"layer {layer}"


def _snapshot(lm):
    return {name: p.detach().clone() for name, p in lm.model.state_dict().items()}


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma_vision"])
def test_model_and_trace_are_bit_identical_after_interventions(name, request):
    lm = request.getfixturevalue(name)
    before, trace = _snapshot(lm), run_trace(lm, HELD_OUT[0])
    directions = directions_from_traces([run_trace(lm, p) for p in POSITIVE], [run_trace(lm, p) for p in NEGATIVE])
    layer_sweep(lm, directions, HELD_OUT, 8.0, ["apple"], ["you"])
    steered_continuations(lm, directions, HELD_OUT[1], 8.0, max_new_tokens=4)
    patchscope(lm, POSITIVE[0], -1, "x is", max_new_tokens=4)
    with pytest.raises(ValueError):  # an intervention that fails half-way leaves nothing behind either
        layer_sweep(lm, directions, HELD_OUT, float("inf"), ["apple"], ["you"])
    after = _snapshot(lm)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    again = run_trace(lm, HELD_OUT[0])
    np.testing.assert_array_equal(trace.hidden_states, again.hidden_states)
    np.testing.assert_array_equal(trace.attentions, again.attentions)
    np.testing.assert_array_equal(trace.last_logits, again.last_logits)
    assert all(not layer._forward_pre_hooks for layer in lm.parts.layers) and not lm.lock.locked()


def test_a_trace_in_another_thread_during_a_sweep_is_unaffected(tiny_gemma, monkeypatch):
    module = importlib.import_module("core.intervene.steering")

    lm = tiny_gemma
    clean = run_trace(lm, HELD_OUT[0])
    directions = directions_from_traces([run_trace(lm, p) for p in POSITIVE], [run_trace(lm, p) for p in NEGATIVE])
    monkeypatch.setattr(module, "MAX_ROWS", 2)  # one layer per batch: many batches, the other thread gets in between
    results, errors = [], []

    def trace_many():
        try:
            for _ in range(6):
                results.append(run_trace(lm, HELD_OUT[0]))
        except Exception as error:  # reported below: an assertion in a thread would be lost
            errors.append(error)

    worker = threading.Thread(target=trace_many)
    started = []

    def start_once(done, total):
        if not started:
            started.append(worker.start())

    layer_sweep(lm, directions, HELD_OUT * 3, 50.0, ["apple"], ["you"], on_progress=start_once)
    worker.join(60)
    assert not errors and len(results) == 6
    for trace in results:
        np.testing.assert_array_equal(trace.hidden_states, clean.hidden_states)
        np.testing.assert_array_equal(trace.last_logits, clean.last_logits)


@pytest.mark.parametrize("call, message", [
    (lambda lm: steering_vector(lm, [], ["a"], 0), r"first \(positive\) list of prompts is empty"),
    (lambda lm: steering_vector(lm, ["a"], [], 0), r"second \(negative\) list of prompts is empty"),
    (lambda lm: steering_vector(lm, ["a", " "], ["b"], 0), r"Prompt 2 of the first \(positive\) list is empty"),
    (lambda lm: steering_vector(lm, "a", ["b"], 0), r"must be a list of prompts"),
    (lambda lm: steering_vector(lm, ["a"], ["b"], 3), r"Layer 3 is out of range .* 0 … 2"),
    (lambda lm: layer_sweep(lm, np.ones((3, 32)), ["a"], float("nan"), ["apple"], ["you"]), r"finite number"),
    (lambda lm: layer_sweep(lm, np.ones((3, 32)), ["a"], float("inf"), ["apple"], ["you"]), r"finite number"),
    (lambda lm: layer_sweep(lm, np.full((3, 32), 1e30), ["a"], 1e30, ["apple"], ["you"]), r"smaller strength"),
    (lambda lm: layer_sweep(lm, np.full((3, 32), 1e18), ["a"], 1e18, ["apple"], ["you"]), r"normalisation would overflow"),
    (lambda lm: check_steer(lm, np.full(32, 1e10), 1e10), r"smaller strength"),
    (lambda lm: layer_sweep(lm, np.ones((3, 32)), [" "], 1.0, ["apple"], ["you"]), r"at least one held-out prompt"),
    (lambda lm: layer_sweep(lm, np.ones((3, 32)), ["a"], 1.0, [], ["you"]), r"at least one target word"),
    (lambda lm: layer_sweep(lm, np.ones((3, 32)), ["a"], 1.0, ["apple"], ["you"], layers=[5]), r"Layer 5"),
    (lambda lm: steered_continuations(lm, np.ones((3, 7)), "a", 1.0), r"needs \(layers, 32\)"),
])
def test_bad_input_is_a_message(tiny_llama, tiny_gemma, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_llama)
    assert not tiny_llama.lock.locked() and all(not l._forward_pre_hooks for l in tiny_llama.parts.layers)
    # the other model keeps working
    assert steering_vector(tiny_gemma, ["a"], ["b"], 1).shape == (32,)


def test_lists_of_different_lengths_are_fine(tiny_llama):
    """A mean difference does not pair prompts: lists of any lengths work."""
    ours = steering_vector(tiny_llama, POSITIVE, NEGATIVE[:1], 2)
    expected = (np.mean([_states(tiny_llama, p)[2][0, -1].numpy() for p in POSITIVE], axis=0)
                - _states(tiny_llama, NEGATIVE[0])[2][0, -1].numpy())
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
