"""The three context pages under AppTest with the embedded pair: they render, and show the right values."""

import pytest

from tests.apptest import assert_clean, run_page

pytestmark = [pytest.mark.app, pytest.mark.embedded]


def test_hidden_states_page_shows_entries_and_the_how_you_demo():
    app = run_page("views/hidden_states.py", query={"hs_prompt": "大家好"})
    assert_clean(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Hidden-state entries"] in ("31", "19")  # SmolLM2 30 layers + 1, Gemma 3 270M 18 + 1
    values = [m.value for m in app.metric if m.label == "Hidden-state entries"]
    assert sorted(values) == ["19", "31"]
    # demo tables at layer 1: "how" identical in both sentences, "you" not
    demos = [frame.value for frame in app.dataframe if "identical" in frame.value.columns]
    assert len(demos) == 2  # one per model
    for data in demos:
        how, you = data[data["word"] == "how"], data[data["word"] == "you"]
        assert how["identical"].all() and len(how) == 2  # "nice to meet you" has no "how"
        assert you["identical"].tolist() == [True, False, False]


def test_similarity_page_two_models_one_chart():
    app = run_page("views/similarity.py")
    assert_clean(app)
    assert not app.error and len(app.get("vega_lite_chart")) == 1
    assert [d for d in app.get("download_button")]


def test_similarity_page_missing_word_is_a_message():
    app = run_page("views/similarity.py", query={"sim_word": "banana"})
    assert_clean(app)
    assert len(app.error) == 2 and 'sentence 1 "I ate an apple for breakfast"' in app.error[0].value


def test_logit_lens_page_presets():
    app = run_page("views/logit_lens.py", query={"lens_prompt": "The capital of France is"})
    assert_clean(app)
    assert not app.error
    labels = [m.label for m in app.metric]
    assert len(labels) == 2 and all("first layer" in label for label in labels)
    # 1 grid per model + 1 trajectory chart
    assert len(app.get("vega_lite_chart")) == 3
