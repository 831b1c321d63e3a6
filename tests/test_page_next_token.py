"""The "Next token and generation" page on the embedded pair, through the entry script (AppTest)."""

import numpy as np
import pytest

from tests.apptest import assert_clean, run_page

PAGE = "views/intervene/next_token.py"


def _tables(app):
    return [frame.value for frame in app.dataframe]


@pytest.mark.app
@pytest.mark.embedded
def test_page_temperature_chat_and_generate():
    app = run_page(PAGE, query={"nt_prompt": "The capital of France is", "nt_tokens": "3"})
    assert_clean(app)
    assert [h.value for h in app.main.header] == ["What the model reads", "The next token", "Continuation"]
    # SmolLM2 is an instruct model: chat on by default, and the exact text shows its template.
    # Gemma 3 270M (base) has no template: its toggle is off and disabled.
    assert app.toggle(key="nt_chat_a").value is True
    assert app.toggle(key="nt_nochat_B").value is False and app.toggle(key="nt_nochat_B").disabled
    seen = [c.value for c in app.code]
    assert any(text.startswith("<|im_start|>system") and text.endswith(  # (st.code drops the final newline)
        "<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant") for text in seen), seen
    assert any(text == "<bos>The capital of France is" for text in seen)

    before = _tables(app)
    assert [list(t.columns) for t in before] == [["rank", "token", "token_id", "prob"]] * 2
    assert len(app.get("vega_lite_chart")) + len(app.get("arrow_vega_lite_chart")) == 2

    # softmax(s / T): halving T squares every probability ratio to the top token; same tokens, same order
    app.slider(key="nt_t").set_value(0.5).run()
    assert_clean(app)
    for old, new in zip(before, _tables(app)):
        assert new["token_id"].tolist() == old["token_id"].tolist()
        np.testing.assert_allclose(new["prob"] / new["prob"].iloc[0], (old["prob"] / old["prob"].iloc[0]) ** 2,
                                   rtol=1e-6)
    assert app.query_params["nt_t"] == "0.5"

    generate = next(b for b in app.button if b.label == "Generate")
    generate.click().run()
    assert_clean(app)
    captions = [c.value for c in app.caption]
    assert sum("3 tokens in" in c or "the model ended its answer" in c for c in captions) == 2, captions
    assert sum(c.startswith("Made with: greedy") for c in captions) == 2
    # a rerun keeps the continuations (they live in the session), with the settings that made them
    app.run()
    assert sum(c.value.startswith("Made with: greedy") for c in app.caption) == 2


@pytest.mark.app
@pytest.mark.embedded
def test_page_sampled_settings_are_shown_and_bound_to_the_url():
    app = run_page(PAGE, query={"nt_prompt": "Once upon a time", "nt_mode": "sampled", "nt_tokens": "2",
                                "nt_seed": "5", "nt_temp": "0.7", "nt_chat_a": "0"})
    assert_clean(app)
    assert app.toggle(key="nt_chat_a").value is False
    assert app.number_input(key="nt_seed").value == 5
    next(b for b in app.button if b.label == "Generate").click().run()
    assert_clean(app)
    made = [c.value for c in app.caption if c.value.startswith("Made with:")]
    assert made == ["Made with: sampled at temperature 0.7, top-p 0.95, seed 5, up to 2 new tokens; "
                    "chat template off."] * 2
