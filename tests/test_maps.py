"""Hidden-state maps: word vectors from independent forward passes, PCA against NumPy's SVD, the
silhouette against its formula, the probe against a hand-written leave-one-out loop, and the page."""

import numpy as np
import pytest
import torch

from core import run_trace
from core.running.maps import (MAX_ITEMS, PRESETS, cosine_silhouette, hidden_state_maps, item_vectors, layer_at_depth,
                       parse_items, pca_2d, probe_accuracy)
from tests.apptest import assert_clean, run_page

TINY = "\n".join([  # words of the tiny tokenizer's corpus; "AirPods" is cut into several pieces
    "fruit: I ate an [apple] for breakfast",
    "fruit: the apple is green. what color is the [apple]?",
    "fruit: the green [apple] is small",
    "company: The company that makes iPads and [AirPods] is Apple.",
    "company: The company that makes [iPads] is cold",
    "company: The [company] is Apple",
])


def hidden_and_offsets(lm, text):
    """The model's own forward pass (independent of core.running.trace): hidden (L+1, T, H) float64, offsets."""
    enc = lm.tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    with torch.inference_mode():
        out = lm.model(input_ids=enc["input_ids"], output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].double().numpy(), enc["offset_mapping"][0].tolist()


def expected_vectors(lm, items, pooling):
    vectors = []
    for item in items:
        hidden, offsets = hidden_and_offsets(lm, item.sentence)
        positions = [i for i, (s, e) in enumerate(offsets) if e > s and s < item.end and e > item.start]
        vectors.append(hidden[:, positions].mean(1) if pooling == "mean" else hidden[:, positions[-1]])
    return np.stack(vectors)  # (N, L+1, H)


def svd_projection(points):
    """PCA by hand: centre, SVD, coordinates on the top two right-singular vectors, variance shares."""
    centred = points - points.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, singular[:2] ** 2 / (singular**2).sum()


def assert_same_up_to_sign(got, expected, atol):
    for axis in range(2):  # each principal axis is defined up to its sign
        sign = np.sign(got[:, axis] @ expected[:, axis]) or 1.0
        np.testing.assert_allclose(got[:, axis], sign * expected[:, axis], atol=atol)


def silhouette_by_formula(points, labels):
    """Rousseeuw's silhouette with cosine distance, one point at a time."""
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    labels = np.asarray(labels)
    scores = []
    for i in range(len(points)):
        own = (labels == labels[i]) & (np.arange(len(points)) != i)
        a = distance[i, own].mean()
        b = min(distance[i, labels == other].mean() for other in set(labels) - {labels[i]})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def probe_by_hand(points, labels):
    """Leave one out, average each group's remaining unit vectors, pick the nearest average (Euclidean)."""
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    labels = np.asarray(labels)
    right = 0
    for i in range(len(points)):
        rest = np.arange(len(points)) != i
        groups = sorted(set(labels[rest]))
        centroids = np.stack([unit[rest & (labels == g)].mean(0) for g in groups])
        right += groups[int(np.argmin(np.linalg.norm(centroids - unit[i], axis=1)))] == labels[i]
    return right / len(points)


def test_parse_items_marks_words_and_names_what_is_wrong():
    items = parse_items("A: I ate an [apple] today\nA: an apple a day\n\nB: [Apple ] sells phones\nB: APPLE pie",
                        default_word="apple")
    assert [(i.group, i.word, i.sentence[i.start:i.end]) for i in items] == [
        ("A", "apple", "apple"), ("A", "apple", "apple"), ("B", "Apple", "Apple"), ("B", "APPLE", "APPLE")]
    assert items[0].sentence == "I ate an apple today" and items[2].sentence == "Apple  sells phones"
    with pytest.raises(ValueError, match=r'"pear" does not appear in sentence 2 "an apple a day"'):
        parse_items("A: I ate a [pear]\nA: an apple a day\nB: [x] y\nB: [z] w", default_word="pear")
    with pytest.raises(ValueError, match='one group \\("A"\\)'):
        parse_items("A: [a] b\nA: [c] d")
    with pytest.raises(ValueError, match='"B" has only one'):
        parse_items("A: [a] b\nA: [c] d\nB: [e] f")
    with pytest.raises(ValueError, match="Line 2 .* has no group"):
        parse_items("A: [a] b\njust a sentence")
    with pytest.raises(ValueError, match="empty brackets"):
        parse_items("A: [] b")
    with pytest.raises(ValueError, match="marks no word"):
        parse_items("A: a b")
    with pytest.raises(ValueError, match=f"at most {MAX_ITEMS}"):
        parse_items("\n".join(f"{g}: [w] {i}" for i in range(13) for g in "AB"))
    for text in PRESETS.values():  # every preset is valid input
        assert len(parse_items(text)) <= MAX_ITEMS


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_vectors_pca_and_scores_match_independent_computations(name, request):
    lm = request.getfixturevalue(name)
    items = parse_items(TINY)
    traces = [run_trace(lm, item.sentence) for item in items]
    expected = {pooling: expected_vectors(lm, items, pooling) for pooling in ("mean", "last")}
    for pooling, vectors in expected.items():
        np.testing.assert_allclose(item_vectors(traces, items, pooling), vectors, rtol=1e-4, atol=1e-5)
    maps = hidden_state_maps(traces, items, "mean")
    vectors = expected["mean"]
    groups = [item.group for item in items]
    assert maps.pieces.set_index("word").loc["AirPods", "pieces"] > 1  # several pieces: the mean matters
    for layer in range(1, lm.num_layers + 1):
        points = maps.points[maps.points["layer"] == layer]
        coordinates, explained = svd_projection(vectors[:, layer])
        assert_same_up_to_sign(points[["x", "y"]].to_numpy(), coordinates, atol=1e-3 * np.abs(coordinates).max())
        np.testing.assert_allclose(points[["explained_x", "explained_y"]].iloc[0], explained, rtol=1e-4)
        row = maps.separation.iloc[layer]
        assert row["silhouette"] == pytest.approx(silhouette_by_formula(vectors[:, layer], groups), abs=1e-5)
        assert row["probe_accuracy"] == pytest.approx(probe_by_hand(vectors[:, layer], groups))
    assert maps.separation["relative_depth"].tolist() == pytest.approx(np.arange(lm.num_layers + 1) / lm.num_layers)


def test_scores_on_a_tiny_hand_made_case():
    points = np.array([[1.0, 0.1, 0], [0.9, 0.0, 0.1], [1.0, -0.1, 0.05], [0.1, 1.0, 0], [0.0, 0.8, 0.2],
                       [0.2, 0.9, -0.1]])
    labels = ["a", "a", "a", "b", "b", "b"]
    assert cosine_silhouette(points, labels) == pytest.approx(silhouette_by_formula(points, labels), abs=1e-12)
    assert cosine_silhouette(points, labels) > 0.8  # two tight, nearly orthogonal groups
    mixed = ["a", "b", "a", "b", "a", "b"]
    assert cosine_silhouette(points, mixed) == pytest.approx(silhouette_by_formula(points, mixed), abs=1e-12)
    assert probe_accuracy(points, labels) == 1.0 and probe_accuracy(points, mixed) == probe_by_hand(points, mixed)
    coordinates, explained = pca_2d(points)
    assert_same_up_to_sign(coordinates, svd_projection(points)[0], atol=1e-12)
    same = np.ones((4, 3))  # one token in every sentence at layer 0: nothing to separate or project
    assert cosine_silhouette(same, ["a", "a", "b", "b"]) == 0.0
    assert np.isnan(probe_accuracy(same, ["a", "a", "b", "b"]))
    assert (pca_2d(same)[0] == 0).all() and (pca_2d(same)[1] == 0).all()
    assert [layer_at_depth(d, 30) for d in (0, 0.5, 1, 1.5)] == [0, 15, 30, 30]
    assert layer_at_depth(0.5, 18) == 9


@pytest.mark.embedded
def test_embedded_pair_apple_senses_separate_with_depth(smollm, gemma270m):
    items = parse_items(PRESETS["apple: 6 fruit, 6 company"])
    groups = [item.group for item in items]
    for lm in (smollm, gemma270m):
        traces = [run_trace(lm, item.sentence) for item in items]
        maps = hidden_state_maps(traces, items)
        vectors = []  # positions from the tokenizer's own offsets; hidden states from the traces (checked
        for trace, item in zip(traces, items):  # against the model's forward pass in test_context.py)
            offsets = lm.tokenizer(item.sentence, return_offsets_mapping=True)["offset_mapping"]
            positions = [i for i, (s, e) in enumerate(offsets) if e > s and s < item.end and e > item.start]
            vectors.append(trace.hidden_states[:, positions].astype(np.float64).mean(1))
        vectors = np.stack(vectors)  # (N, L+1, H)
        middle = lm.num_layers // 2
        coordinates, _ = svd_projection(vectors[:, middle])
        got = maps.points[maps.points["layer"] == middle][["x", "y"]].to_numpy()
        assert_same_up_to_sign(got, coordinates, atol=1e-3 * np.abs(coordinates).max())
        separation = maps.separation.set_index("layer")
        # layer 0: " apple" is one token, the same row of the table in every sentence
        assert separation.loc[0, "silhouette"] == 0.0 and np.isnan(separation.loc[0, "probe_accuracy"])
        assert separation.loc[middle, "silhouette"] == pytest.approx(
            silhouette_by_formula(vectors[:, middle], groups), abs=1e-4)
        assert separation.loc[middle, "silhouette"] > 0.3 and separation.loc[middle, "probe_accuracy"] == 1.0


@pytest.mark.app
@pytest.mark.embedded
def test_page_bank_preset_shows_core_values_and_bad_input_messages():
    import ui  # the page's module (dashboard/ is on sys.path, as under `streamlit run`)

    app = run_page("views/running/hidden_state_maps.py", query={"maps_depth": "0.5"})
    app.button(key="maps_items-preset-2").click().run()  # "bank: 5 river, 5 money"
    assert_clean(app)
    assert not app.error, [e.value for e in app.error]
    items = parse_items(PRESETS["bank: 5 river, 5 money"])
    shown = [(m.label, m.value) for m in app.metric]
    expected = []
    for slot in app.session_state["_slots"]:
        # the page's own cached traces (same process): run_trace is checked against forward passes elsewhere
        maps = hidden_state_maps([ui.cached_trace(slot.key, item.sentence) for item in items], items)
        row = maps.separation.iloc[layer_at_depth(0.5, slot.lm.num_layers)]
        expected += [("Silhouette (cosine)", f"{row['silhouette']:.3f}"),
                     ("Nearest-centroid accuracy", f"{row['probe_accuracy']:.0%}")]
    assert shown == expected
    assert len(app.get("vega_lite_chart")) == 3  # a map per model + the separation chart

    app.text_area(key="maps_items").set_value("river: the [bank] of the river\nriver: a muddy [bank]").run()
    assert_clean(app)
    assert 'All sentences are in one group ("river")' in app.error[0].value
    app.text_area(key="maps_items").set_value("river: the bank of the river\nmoney: the bank\nmoney: a loan").run()
    app.text_input(key="maps_word").set_value("bank").run()
    assert_clean(app)
    assert app.error[0].value.startswith('The word "bank" does not appear in sentence 3 "a loan"')
