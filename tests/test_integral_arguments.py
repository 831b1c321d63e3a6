"""Layer numbers, counts and positions of every integral type, as a notebook passes them.

Layer numbers read from our own DataFrames are np.int64 (e.g. the best row of `layer_sweep`): each call
below gives exactly what the same call with a Python int gives. Floats and bools are still refused,
with a message that says why; a layer out of range names the convention.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from core import (Steer, generate, logit_lens, next_token_table, patchscope, run_trace, steering_vector,
                  word_position)
from core.intervene.steering import layer_sweep

PROMPT = "the apple is green. what color is the apple?"


def test_numpy_and_tensor_integers_give_the_same_results_as_ints(tiny_llama):
    lm = tiny_llama
    vector = steering_vector(lm, ["red apple"], ["green apple"], layer=1)
    np.testing.assert_array_equal(steering_vector(lm, ["red apple"], ["green apple"], layer=np.int64(1)), vector)
    plain = generate(lm, PROMPT, max_new_tokens=3, steer=Steer(1, vector, 4.0))
    for layer, count in [(np.int64(1), np.int64(3)), (torch.tensor(1), np.int32(3))]:
        other = generate(lm, PROMPT, max_new_tokens=count, steer=Steer(layer, vector, 4.0))
        assert other.token_ids == plain.token_ids and other.settings["steer_layer"] == 1
    pd.testing.assert_frame_equal(next_token_table(lm, PROMPT, k=np.int64(3)), next_token_table(lm, PROMPT, k=3))
    pd.testing.assert_frame_equal(logit_lens(lm, PROMPT, k=np.int64(3)), logit_lens(lm, PROMPT, k=3))
    args = (lm, "Diana, Princess of Wales", -1, "x ->")
    pd.testing.assert_frame_equal(patchscope(*args, target_layer=np.int64(1), max_new_tokens=np.int64(2)),
                                  patchscope(*args, target_layer=1, max_new_tokens=2))
    pd.testing.assert_frame_equal(patchscope(*args, layers=np.arange(2), max_new_tokens=2),
                                  patchscope(*args, layers=[0, 1], max_new_tokens=2))


def test_the_best_layer_of_a_sweep_goes_straight_back_into_steer(tiny_llama):
    lm = tiny_llama
    directions = np.stack([steering_vector(lm, ["good"], ["bad"], layer=l) for l in range(lm.num_layers)])
    sweep = layer_sweep(lm, directions, ["I feel"], 4.0, ["good"], ["bad"])
    best = sweep.loc[sweep["shift"].idxmax(), "layer"]
    assert isinstance(best, np.integer)  # what a notebook gets from the DataFrame
    steered = generate(lm, "I feel", max_new_tokens=2, steer=Steer(best, directions[best], 4.0))
    assert steered.token_ids == generate(lm, "I feel", max_new_tokens=2,
                                         steer=Steer(int(best), directions[best], 4.0)).token_ids


@pytest.mark.parametrize("layer", [1.5, 1.0, True, "1"])
def test_a_layer_that_is_not_a_whole_number_is_refused_as_such(tiny_llama, layer):
    with pytest.raises(ValueError, match="whole number"):
        steering_vector(tiny_llama, ["a"], ["b"], layer=layer)
    with pytest.raises(ValueError, match="whole number"):
        generate(tiny_llama, PROMPT, max_new_tokens=2, steer=Steer(layer, np.zeros(tiny_llama.hidden_size), 1.0))


def test_counts_that_are_not_whole_numbers_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="whole number"):
        generate(tiny_llama, PROMPT, max_new_tokens=2.0)
    with pytest.raises(ValueError, match="whole number"):
        next_token_table(tiny_llama, PROMPT, k=2.5)
    with pytest.raises(ValueError, match="whole number"):
        patchscope(tiny_llama, "Diana, Princess of Wales", 1.5, "x ->", max_new_tokens=2)


def test_out_of_range_layer_names_the_one_convention(tiny_llama):
    lm = tiny_llama
    with pytest.raises(ValueError, match=r"input of block l = the output of block l − 1; 0 = the embedding output"):
        steering_vector(lm, ["a"], ["b"], layer=np.int64(lm.num_layers))


def test_word_position_is_the_last_token_of_the_last_occurrence(tiny_llama):
    trace = run_trace(tiny_llama, "Diana, Princess of Wales")
    position = word_position(trace, "Wales")
    start, end = trace.offsets[position]
    assert start <= trace.prompt.rfind("Wales") + len("Wales") - 1 < end
    assert all(trace.offsets[p][0] > trace.prompt.rfind("Wales") + 4 or p <= position
               for p in range(len(trace.tokens)))


@pytest.mark.embedded
def test_patchscope_takes_chat_as_the_page_does(smollm):
    from core.intervene.patchscopes import patchscope_from_trace

    source = "Diana, Princess of Wales"
    trace = run_trace(smollm, source)
    position = word_position(trace, "Wales")
    ours = patchscope(smollm, source, position, "x", layers=[2, 5], max_new_tokens=3, chat=True)
    page = patchscope_from_trace(smollm, trace, position, "x", layers=[2, 5], max_new_tokens=3, chat=True)
    pd.testing.assert_frame_equal(ours, page)
    plain = patchscope(smollm, source, position, "x", layers=[2, 5], max_new_tokens=3)
    assert not ours["token_ids"].equals(plain["token_ids"])  # the template really changed the target prompt
