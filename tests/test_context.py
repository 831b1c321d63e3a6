"""Hidden states and contextual similarity, checked against forward passes and brute-force cosines."""

import numpy as np
import pytest
import torch

from core import run_trace
from core.running.context import (
    difference_by_layer,
    find_word,
    hidden_state_facts,
    similarity_curves,
    vector_preview,
    word_pieces,
    word_vectors_across,
)

DEMO = ["how about you?", "how are you?", "nice to meet you"]
APPLES = ["I ate an apple for breakfast", "The company that makes iPads and AirPods is called apple"]


def hidden_of(lm, text):
    """Hidden states from the model's own forward pass (independent of core.running.trace): (L+1, T, H), offsets."""
    enc = lm.tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    with torch.inference_mode():
        out = lm.model(input_ids=enc["input_ids"], output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].double().numpy(), enc["offset_mapping"][0].tolist()


def positions_of(offsets, start, end):
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_facts_and_preview(tiny_llama):
    trace = run_trace(tiny_llama, "how are you?")
    facts = hidden_state_facts(trace)
    T = len(trace.tokens)
    assert len(facts) == tiny_llama.num_layers + 1 and facts["shape"].iloc[0] == f"(1, {T}, 32)"
    hidden, _ = hidden_of(tiny_llama, "how are you?")
    preview = vector_preview(trace, 2, 1, n=5)
    np.testing.assert_allclose(preview["value"], hidden[2, 1, :5], rtol=1e-5)
    with pytest.raises(ValueError, match="Layer 99"):
        vector_preview(trace, 99, 0)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_sentence_with_itself_is_one_at_every_layer(name, request):
    lm = request.getfixturevalue(name)
    for center in (False, True):
        curves = similarity_curves(lm, [APPLES[0], APPLES[0]], "apple", center=center)
        assert len(curves) == lm.num_layers + 1
        np.testing.assert_allclose(curves["cosine"], 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_layer0_same_token_is_one_and_matches_brute_force(name, request):
    lm = request.getfixturevalue(name)
    curves = similarity_curves(lm, APPLES, "apple")
    assert curves.loc[curves["layer"] == 0, "cosine"].item() == pytest.approx(1.0, abs=1e-6)
    # brute force, from independent forward passes: word = mean of its pieces; baseline = mean over all token pairs
    (h0, o0), (h1, o1) = hidden_of(lm, APPLES[0]), hidden_of(lm, APPLES[1])
    p0 = positions_of(o0, APPLES[0].index("apple"), APPLES[0].index("apple") + 5)
    p1 = positions_of(o1, APPLES[1].index("apple"), APPLES[1].index("apple") + 5)
    for layer in range(lm.num_layers + 1):
        expected = cosine(h0[layer, p0].mean(0), h1[layer, p1].mean(0))
        pairs = [cosine(a, b) for a in h0[layer] for b in h1[layer]]
        row = curves[curves["layer"] == layer].iloc[0]
        assert row["cosine"] == pytest.approx(expected, abs=1e-5)
        assert row["normalized"] == pytest.approx(expected / np.mean(pairs), rel=1e-4)


def test_exclude_bos_and_center_baseline(tiny_gemma):
    sentences = APPLES + ["She baked an apple pie for dessert"]
    curves = similarity_curves(tiny_gemma, sentences, "apple", exclude_bos=True, center=True)
    hidden = [hidden_of(tiny_gemma, s) for s in sentences]
    layer = 2
    kept = [h[layer, 1:] for h, _ in hidden]  # <bos> is position 0 in the tiny tokenizer
    mean = np.concatenate(kept).mean(0)
    pairs = [cosine(a - mean, b - mean) for i in range(3) for j in range(3) if i != j for a in kept[i] for b in kept[j]]
    baseline = curves.loc[curves["layer"] == layer, "baseline"].iloc[0]
    assert baseline == pytest.approx(np.mean(pairs), abs=1e-5)
    assert sorted(curves["pair"].unique()) == ["0-1", "0-2", "1-2"]


@pytest.mark.parametrize("exclude_bos, center", [(False, False), (True, True)])
def test_pair_baseline_is_the_mean_over_its_own_two_sentences(tiny_llama, exclude_bos, center):
    """The lecture's two-sentence recipe, per pair: cosine / mean cosine over the tokens of those two sentences."""
    sentences = APPLES + ["She baked an apple pie for dessert"]
    curves = similarity_curves(tiny_llama, sentences, "apple", exclude_bos=exclude_bos, center=center)
    hidden = [hidden_of(tiny_llama, s) for s in sentences]
    first = 1 if exclude_bos else 0  # <bos> is position 0 in the tiny tokenizer
    for layer in (1, tiny_llama.num_layers):
        kept = [h[layer, first:] for h, _ in hidden]
        mean = np.concatenate(kept).mean(0) if center else 0.0
        words = [h[layer, positions_of(o, s.index("apple"), s.index("apple") + 5)].mean(0)
                 for (h, o), s in zip(hidden, sentences)]
        for i, j in [(0, 1), (0, 2), (1, 2)]:
            own = np.mean([cosine(a - mean, b - mean) for a in kept[i] for b in kept[j]])
            expected = cosine(words[i] - mean, words[j] - mean) / own
            row = curves[(curves["layer"] == layer) & (curves["pair"] == f"{i}-{j}")].iloc[0]
            assert row["pair_baseline"] == pytest.approx(own, abs=1e-5)
            assert row["pair_normalized"] == pytest.approx(expected, rel=1e-4)
    two = similarity_curves(tiny_llama, APPLES, "apple")  # two sentences: both recipes are the same number
    np.testing.assert_allclose(two["pair_baseline"], two["baseline"], rtol=1e-6)


def test_missing_word_names_the_sentence(tiny_llama):
    with pytest.raises(ValueError, match=r'sentence 2 "nice to meet you"'):
        similarity_curves(tiny_llama, ["how about you?", "nice to meet you"], "how")
    with pytest.raises(ValueError, match="between 2 and 8"):
        similarity_curves(tiny_llama, ["only one apple"], "apple")


def test_word_in_pieces_is_the_mean_of_its_pieces(tiny_llama):
    trace = run_trace(tiny_llama, APPLES[1])
    start = APPLES[1].index("AirPods")
    expected = positions_of(trace.offsets.tolist(), start, start + len("AirPods"))
    assert find_word(trace, "airpods") == expected
    pieces = word_pieces(tiny_llama, [trace], "AirPods")
    assert pieces["pieces"].item() == len(expected) >= 1


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_how_identical_at_every_layer_you_only_at_layer0(name, request):
    lm = request.getfixturevalue(name)
    hidden = [hidden_of(lm, s) for s in DEMO]
    # independent: "how" opens the first two sentences (after <bos> if any): same left context
    how = [positions_of(o, 0, 3) for _, o in hidden[:2]]
    np.testing.assert_array_equal(hidden[0][0][:, how[0]], hidden[1][0][:, how[1]])
    table = word_vectors_across(lm, DEMO, ["how", "you"])
    summary = difference_by_layer(table).set_index(["word", "layer"])
    assert summary.loc["how", "identical"].all()
    assert summary.loc[("you", 0), "identical"]
    assert not summary.loc["you", "identical"].iloc[1:].any()
    assert set(table.loc[table["word"] == "how", "sentence"]) == {1, 2}  # not in "nice to meet you"


@pytest.mark.embedded
@pytest.mark.parametrize("name", ["smollm", "gemma270m"])
def test_embedded_how_you_demo(name, request):
    lm = request.getfixturevalue(name)
    summary = difference_by_layer(word_vectors_across(lm, DEMO, ["how", "you"])).set_index(["word", "layer"])
    assert summary.loc["how", "max_difference"].max() == 0.0  # bit-identical: nothing to the left differs
    assert summary.loc[("you", 0), "max_difference"] == 0.0
    assert (summary.loc["you", "max_difference"].iloc[1:] > 1e-3).all()
    curves = similarity_curves(lm, [DEMO[0], DEMO[0]], "you")
    np.testing.assert_allclose(curves["cosine"], 1.0, atol=1e-5)
