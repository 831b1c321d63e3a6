"""App tier: the entry script and Home page under AppTest."""

import pytest

from tests.apptest import assert_clean, run_page

pytestmark = pytest.mark.app


def card_text(app) -> str:
    return " ".join(t.value.to_csv() for t in [*app.table, *app.dataframe])


def test_home_shows_both_embedded_cards():
    app = run_page()
    assert_clean(app)
    text = card_text(app)
    assert "134,515,008" in text and "268,098,176" in text
    assert "LlamaForCausalLM" in text and "Gemma3ForCausalLM" in text
    assert app.query_params["a"] == ["smollm2-135m"] or app.query_params["a"] == "smollm2-135m"


def test_config_only_reference_model_from_the_url():
    app = run_page(query={"a": "llama-3.2-3b", "a_weights": "0"})
    assert_clean(app)
    text = card_text(app)
    assert "3,212,749,824" in text and "config only" in text
    assert "268,098,176" in text  # model B still loaded


def test_unknown_model_is_a_message_and_the_other_model_still_works():
    app = run_page(query={"a": "/no/such/folder"})
    assert_clean(app)
    assert any("does not exist" in e.value for e in app.error)
    assert "268,098,176" in card_text(app)
