"""core.intervene.generation against independent computations with plain transformers and torch.

Each expected value is computed here without core.intervene.generation: model.generate itself, a sampling
loop written out in the test, a forward pre-hook registered by the test on the model's own block,
and softmax(logits / T) of a plain forward pass.
"""

import threading
import time

import numpy as np
import pytest
import torch

from core import Steer, generate, next_token_table, run_trace
from core.intervene.generation import generate_ids
from core.text.tokens import display_token

PROMPT = "the apple is green. what color is the apple?"


def _ids(lm, prompt=PROMPT):
    return torch.tensor([lm.tokenizer(prompt)["input_ids"]])  # (1, T)


def _reference_greedy(lm, n, prompt=PROMPT):
    ids = _ids(lm, prompt)
    with torch.no_grad():
        out = lm.model.generate(ids, do_sample=False, max_new_tokens=n)
    return out[0, ids.shape[1]:].tolist()


def _own_block(lm, layer):
    """The block that reads hidden_states[layer], found by this test from the HF layout (not core.model.parts)."""
    inner = lm.model.model
    inner = getattr(inner, "language_model", inner)  # Gemma 3 with a vision tower keeps the text stack there
    return inner.layers[layer]


def _add_hook(vector):
    def hook(module, args, kwargs):
        if args:
            return (args[0] + vector, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}

    return hook


def _snapshot(lm):
    return {name: p.detach().clone() for name, p in lm.model.named_parameters()}


def _assert_untouched(lm, params, trace):
    for name, p in lm.model.named_parameters():
        assert torch.equal(p, params[name]), name
    again = run_trace(lm, PROMPT)
    np.testing.assert_array_equal(trace.hidden_states, again.hidden_states)
    np.testing.assert_array_equal(trace.attentions, again.attentions)
    np.testing.assert_array_equal(trace.last_logits, again.last_logits)
    assert not lm.lock.locked()
    assert all(not block._forward_pre_hooks for block in lm.parts.layers)


# ---------------------------------------------------------------- greedy


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma", "tiny_gemma_vision"])
def test_greedy_equals_model_generate(name, request):
    lm = request.getfixturevalue(name)
    ours = generate(lm, PROMPT, max_new_tokens=12)
    expected = _reference_greedy(lm, 12)
    assert list(ours.token_ids) == expected
    assert ours.text == lm.tokenizer.decode(expected, skip_special_tokens=True)
    assert ours.finished == ("end" if expected[-1] == lm.model.generation_config.eos_token_id else "length")


@pytest.mark.embedded
@pytest.mark.parametrize("name", ["smollm", "gemma270m"])
def test_greedy_equals_model_generate_embedded(name, request):
    lm = request.getfixturevalue(name)
    prompt = "The capital of France is"
    ours = generate(lm, prompt, max_new_tokens=8)
    expected = _reference_greedy(lm, 8, prompt)
    assert list(ours.token_ids) == expected
    assert ours.text == lm.tokenizer.decode(expected, skip_special_tokens=True)


# ---------------------------------------------------------------- sampling


def _reference_sample(lm, n, temperature, top_p, seed):
    """softmax(logits / T) restricted to the top-p nucleus, drawn with a torch.Generator: written out here."""
    generator = torch.Generator().manual_seed(seed)
    ids = _ids(lm)
    eos = lm.model.generation_config.eos_token_id
    new = []
    for _ in range(n):
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, -1].float() / temperature  # (vocab,)
        probs = torch.softmax(logits, dim=-1)
        order = torch.argsort(probs, descending=True)
        before = torch.cumsum(probs[order], dim=0) - probs[order]  # mass of the tokens ranked above each
        keep = order[before < top_p]  # smallest set whose mass reaches top_p
        masked = torch.full_like(logits, -torch.inf)
        masked[keep] = logits[keep]
        token = torch.multinomial(torch.softmax(masked, dim=-1)[None], 1, generator=generator)[0, 0]
        new.append(int(token))
        ids = torch.cat([ids, token.view(1, 1)], dim=1)
        if int(token) == eos:
            break
    return new


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (1.5, 0.8)])
def test_sampling_equals_an_independent_loop_and_repeats(tiny_llama, temperature, top_p):
    lm = tiny_llama
    first = generate(lm, PROMPT, max_new_tokens=10, temperature=temperature, top_p=top_p, seed=7)
    second = generate(lm, PROMPT, max_new_tokens=10, temperature=temperature, top_p=top_p, seed=7)
    assert first.token_ids == second.token_ids and first.text == second.text
    assert list(first.token_ids) == _reference_sample(lm, 10, temperature, top_p, seed=7)
    others = {generate(lm, PROMPT, max_new_tokens=10, temperature=temperature, seed=s).token_ids for s in range(4)}
    assert len(others) > 1  # the seed matters (a random tiny model is close to uniform)


def test_sampling_leaves_the_global_random_state_alone(tiny_gemma):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(tiny_gemma, PROMPT, max_new_tokens=5, temperature=1.0, seed=1)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- steering


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma_vision"])
def test_strength_zero_is_no_steering(name, request):
    lm = request.getfixturevalue(name)
    vector = np.linspace(-3, 3, lm.hidden_size)
    plain = generate(lm, PROMPT, max_new_tokens=8)
    steered = generate(lm, PROMPT, max_new_tokens=8, steer=Steer(1, vector, 0.0))
    assert steered.token_ids == plain.token_ids


@pytest.mark.parametrize("name, layer", [("tiny_llama", 0), ("tiny_llama", 2), ("tiny_gemma", 1),
                                         ("tiny_gemma_vision", 2)])
def test_steering_equals_the_tests_own_hook(name, layer, request):
    lm = request.getfixturevalue(name)
    vector = np.random.default_rng(layer).normal(size=lm.hidden_size).astype(np.float32)
    strength = 4.0
    handle = _own_block(lm, layer).register_forward_pre_hook(
        _add_hook(strength * torch.from_numpy(vector)), with_kwargs=True)
    try:
        expected = _reference_greedy(lm, 10)
    finally:
        handle.remove()
    ours = generate(lm, PROMPT, max_new_tokens=10, steer=Steer(layer, vector, strength))
    assert list(ours.token_ids) == expected
    assert ours.token_ids != generate(lm, PROMPT, max_new_tokens=10).token_ids  # the edit did something


@pytest.mark.embedded
def test_steering_equals_the_tests_own_hook_embedded(smollm):
    lm, layer, strength = smollm, 10, 8.0
    vector = np.random.default_rng(0).normal(size=lm.hidden_size).astype(np.float32)
    handle = _own_block(lm, layer).register_forward_pre_hook(
        _add_hook(strength * torch.from_numpy(vector)), with_kwargs=True)
    try:
        expected = _reference_greedy(lm, 6, "The capital of France is")
    finally:
        handle.remove()
    ours = generate(lm, "The capital of France is", max_new_tokens=6, steer=Steer(layer, vector, strength))
    assert list(ours.token_ids) == expected


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_strength_is_a_message(tiny_llama, strength):
    with pytest.raises(ValueError, match="strength is .*finite number"):
        generate(tiny_llama, PROMPT, steer=Steer(1, np.ones(tiny_llama.hidden_size), strength))
    assert not tiny_llama.lock.locked()


def test_overflowing_or_exploding_strength_is_a_message(tiny_llama):
    lm = tiny_llama
    with pytest.raises(ValueError, match="overflows"):
        generate(lm, PROMPT, steer=Steer(1, np.full(lm.hidden_size, 10.0), 1e38))
    with pytest.raises(ValueError, match="too large"):  # representable, but its square overflows the norms
        generate(lm, PROMPT, steer=Steer(1, np.full(lm.hidden_size, 1.0), 1e30))
    with pytest.raises(ValueError, match="NaN or infinite"):  # any edit whose forward pass gives NaN scores
        generate_ids(lm, [0, 5, 6], max_new_tokens=3, edits={1: lambda h: h * float("nan")})
    assert not lm.lock.locked() and all(not b._forward_pre_hooks for b in lm.parts.layers)


def test_bad_steer_layer_and_vector_are_messages(tiny_llama):
    with pytest.raises(ValueError, match=r"Layer 3 is out of range .* 0 … 2"):
        generate(tiny_llama, PROMPT, steer=Steer(3, np.ones(tiny_llama.hidden_size), 1.0))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        generate(tiny_llama, PROMPT, steer=Steer(1, np.ones(5), 1.0))


# ---------------------------------------------------------------- the model is left as it was


def test_generation_leaves_parameters_and_traces_bit_identical(tiny_gemma):
    lm = tiny_gemma
    params, trace = _snapshot(lm), run_trace(lm, PROMPT)
    generate(lm, PROMPT, max_new_tokens=6)
    generate(lm, PROMPT, max_new_tokens=6, temperature=0.9, top_p=0.9, seed=3)
    generate(lm, PROMPT, max_new_tokens=6, steer=Steer(2, np.ones(lm.hidden_size), -5.0))
    _assert_untouched(lm, params, trace)


def test_a_trace_in_another_thread_during_steered_generation_is_clean(tiny_llama):
    lm = tiny_llama
    clean = run_trace(lm, PROMPT)
    results, seen_running = {}, []

    def other_session():
        results["trace"] = run_trace(lm, PROMPT)

    other = threading.Thread(target=other_session)

    def on_token(token_id, text):
        if not other.is_alive() and "trace" not in results:
            other.start()  # asks for the model while the steering hook is attached
        time.sleep(0.02)  # give it every chance to run now, if the lock let it
        seen_running.append("trace" not in results)

    steered = generate(lm, PROMPT, max_new_tokens=6, steer=Steer(1, np.full(lm.hidden_size, 3.0), 2.0),
                       on_token=on_token)
    other.join(timeout=30)
    assert all(seen_running) and len(seen_running) == len(steered.token_ids)  # it waited for the generation
    np.testing.assert_array_equal(results["trace"].hidden_states, clean.hidden_states)
    np.testing.assert_array_equal(results["trace"].last_logits, clean.last_logits)


# ---------------------------------------------------------------- streaming and stopping


def test_on_token_streams_every_new_token(tiny_llama):
    streamed = []
    result = generate(tiny_llama, PROMPT, max_new_tokens=8, temperature=1.0, seed=2,
                      on_token=lambda token_id, text: streamed.append((token_id, text)))
    assert [t for t, _ in streamed] == list(result.token_ids)
    assert streamed[-1][1] == result.text
    assert [text for _, text in streamed] == [
        tiny_llama.tokenizer.decode(list(result.token_ids[:i + 1]), skip_special_tokens=True)
        for i in range(len(streamed))]


def test_a_stop_inside_on_token_releases_hooks_and_lock(tiny_gemma):
    """Streamlit's Stop is an exception raised at the next st.* call, i.e. inside on_token."""
    lm = tiny_gemma
    params, trace = _snapshot(lm), run_trace(lm, PROMPT)

    class Stop(Exception):
        pass

    def on_token(token_id, text):
        assert lm.lock.locked() and lm.parts.layers[1]._forward_pre_hooks
        raise Stop

    with pytest.raises(Stop):
        generate(lm, PROMPT, max_new_tokens=8, steer=Steer(1, np.ones(lm.hidden_size), 2.0), on_token=on_token)
    _assert_untouched(lm, params, trace)


def test_generate_ids_continues_exactly_the_given_ids(tiny_llama):
    ids = tiny_llama.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]  # no BOS: nothing is added
    ours = generate_ids(tiny_llama, ids, max_new_tokens=5)
    with torch.no_grad():
        out = tiny_llama.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=5)
    assert list(ours.token_ids) == out[0, len(ids):].tolist() and ours.prompt_ids == tuple(ids)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top-p"), ({"seed": -1}, "seed")])
def test_bad_settings_are_messages(tiny_llama, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_llama, PROMPT, **kwargs)


# ---------------------------------------------------------------- chat template


def test_chat_without_a_template_names_the_model(tiny_llama):
    with pytest.raises(ValueError, match=f"{tiny_llama.name} has no chat template"):
        generate(tiny_llama, PROMPT, chat=True)
    with pytest.raises(ValueError, match="no chat template"):
        next_token_table(tiny_llama, PROMPT, chat=True)


def test_a_plain_prompt_too_long_is_cut_and_says_so(tiny_llama):
    long = "the apple is green. " * 200  # over 512 tokens
    result = generate(tiny_llama, long, max_new_tokens=2)
    assert result.prompt_truncated and len(result.prompt_ids) == 512
    assert result.prompt_ids == tuple(tiny_llama.tokenizer(long)["input_ids"][:512])


@pytest.mark.embedded
def test_chat_uses_the_models_template(smollm):
    from core.text.chat import chat_text, prompt_ids

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected = smollm.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"]
    assert prompt_ids(smollm, messages[0]["content"], chat=True) == list(expected)
    assert chat_text(smollm, messages[0]["content"]).endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="With the chat template, the prompt is .* tokens for smollm2-135m"):
        generate(smollm, "the apple is green. " * 200, chat=True)


# ---------------------------------------------------------------- next-token distribution


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_next_token_table_is_softmax_of_logits_over_t(name, temperature, request):
    lm = request.getfixturevalue(name)
    with torch.no_grad():
        logits = lm.model(input_ids=_ids(lm)).logits[0, -1].double()  # (vocab,)
    probs = torch.softmax(logits / temperature, dim=-1)
    expected = torch.topk(probs, 5)
    table = next_token_table(lm, PROMPT, k=5, temperature=temperature)
    assert list(table.columns) == ["rank", "token", "token_id", "prob"]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(table["prob"], expected.values.numpy(), rtol=1e-5)
    assert table["token_id"].tolist() == expected.indices.tolist()
    # the readable text of each id, as every page shows tokens (core.text.tokens.display_token: byte pieces as <80>)
    assert table["token"].tolist() == [display_token(lm, i) for i in expected.indices.tolist()]


def test_temperature_zero_puts_everything_on_the_greedy_token(tiny_llama):
    table = next_token_table(tiny_llama, PROMPT, k=3, temperature=0.0)
    assert table["prob"].tolist() == [1.0, 0.0, 0.0]
    assert table["token_id"].iloc[0] == _reference_greedy(tiny_llama, 1)[0]
