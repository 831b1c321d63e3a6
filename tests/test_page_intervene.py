"""The Patchscopes and Steering pages on the embedded pair, through the entry script (AppTest)."""

import pytest

from tests.apptest import assert_clean, run_page


def _button(app, label):
    return next(b for b in app.button if b.label == label)


def _charts(app):
    return len(app.get("vega_lite_chart")) + len(app.get("arrow_vega_lite_chart"))


@pytest.mark.app
@pytest.mark.embedded
def test_patchscopes_page_presets_and_bad_input():
    app = run_page("views/intervene/patchscopes.py", query={"ps_tokens": "3", "ps_target_kind": "identity"})
    assert_clean(app)
    tables = [frame.value for frame in app.dataframe if "answer" in frame.value.columns]
    assert [len(t) for t in tables] == [30, 18]  # one row per source layer of SmolLM2 and Gemma 3 270M
    assert all(t["layer"].tolist() == list(range(len(t))) for t in tables)
    assert all(t["changed"].iloc[0] for t in tables)  # the first layer always counts as a change
    assert _charts(app) >= 2  # the alignment strip and the by-depth view
    # SmolLM2's first layers read the token itself back from the identity prompt
    assert "wales" in tables[0]["answer"].iloc[0].lower()

    _button(app, "apple: the company").click().run()
    assert_clean(app)
    assert app.session_state["ps_source"].endswith("is called apple")
    assert [len(frame.value) for frame in app.dataframe if "answer" in frame.value.columns] == [30, 18]

    app.text_input(key="ps_placeholder").set_value("@@").run()
    assert_clean(app)
    assert any('placeholder "@@" does not appear' in e.value for e in app.error)


@pytest.mark.app
@pytest.mark.embedded
def test_steering_page_generate_and_try_every_layer():
    app = run_page("views/intervene/steering.py", query={"st_tokens": "3"})
    assert_clean(app)
    _button(app, "French vs English").click().run()
    assert_clean(app)
    assert app.session_state["st_test"] == "My favourite food is"
    _button(app, "Generate").click().run()
    assert_clean(app)
    made = [c.value for c in app.caption if c.value.startswith("Made with: greedy")]
    assert len(made) == 4  # unsteered and steered, for both models
    _button(app, "Try every layer").click().run()
    assert_clean(app)
    assert _charts(app) == 1
    assert any(c.value.startswith("Largest score per model") for c in app.caption)

    # the refusal preset turns the chat template on for SmolLM2; Gemma 3 270M has none: its toggle stays off
    _button(app, "Refuse vs comply (lecture; chat on)").click().run()
    assert_clean(app)
    assert app.toggle(key="st_chat_a").value is True
    assert app.toggle(key="st_nochat_B").disabled

    app.text_area(key="st_negative").set_value("  ").run()
    assert_clean(app)
    assert any("at least one prompt in each list" in w.value for w in app.warning)
