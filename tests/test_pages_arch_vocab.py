"""App tier: the Architecture and Vocabulary pages with the embedded pair and with a config-only model."""

import pytest

from tests.apptest import assert_clean, run_page

pytestmark = [pytest.mark.app, pytest.mark.embedded]

CONFIG_ONLY_A = {"a": "llama-3.2-3b", "a_weights": "0"}


def tables_text(app) -> str:
    return " ".join(t.value.to_csv() for t in [*app.table, *app.dataframe])


def charts(app) -> list:
    return app.get("vega_lite_chart")


def messages(app, kind: str) -> list[str]:
    return [m.value for m in getattr(app, kind)]


# ---------------------------------------------------------------- architecture


def test_architecture_embedded_pair():
    app = run_page("views/weights/architecture.py")
    assert_clean(app)
    text = tables_text(app)
    assert "134,515,008" in text and "268,098,176" in text  # totals of SmolLM2-135M and Gemma 3 270M
    assert "3 query heads share each key/value head" in text and "global layers 5, 11, 17" in text
    assert "model.layers.29.mlp.up_proj.weight" not in text  # one-layer view by default
    # component chart + per model: corner, whole-matrix sample, histogram
    assert len(charts(app)) == 1 + 2 * 3
    assert not messages(app, "error")


def test_architecture_config_only_model_shows_true_shapes():
    app = run_page("views/weights/architecture.py", query=CONFIG_ONLY_A)
    assert_clean(app)
    text = tables_text(app)
    assert "3,212,749,824" in text and "3,072 × 3,072" in text and "1,024 × 3,072" in text
    assert "8,192 × 3,072" in text and "128,256 × 3,072" in text
    assert any("config only" in m and "model.layers.27.mlp.up_proj.weight" in m for m in messages(app, "info"))
    assert len(charts(app)) == 1 + 3  # B still draws its weights
    assert not messages(app, "error")


def test_architecture_unknown_tensor_name_is_a_message():
    app = run_page("views/weights/architecture.py", query={"arch_tensor_a": "model.no_such.weight"})
    assert_clean(app)
    assert any("has no tensor called 'model.no_such.weight'" in m for m in messages(app, "error"))
    assert len(charts(app)) == 1 + 3  # model B unaffected


def test_architecture_all_layers_and_search():
    app = run_page("views/weights/architecture.py", query={"arch_search": "up_proj"})
    app.toggle(key="arch_one_layer").set_value(False).run()
    assert_clean(app)
    lists = [t.value for t in app.dataframe if "count" in t.value.columns]  # the two parameter lists
    assert [len(t) for t in lists] == [30, 18]  # every layer's up_proj: SmolLM2 30 layers, Gemma 18
    assert all(t["name"].str.contains("up_proj").all() for t in lists)
    assert "model.layers.29.mlp.up_proj.weight" in set(lists[0]["name"])


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_embedded_pair():
    app = run_page("views/weights/vocabulary.py")
    assert_clean(app)
    metrics = [m.value for m in app.metric]
    assert metrics[:2] == ["5", "2"]  # 大家好: SmolLM2 5 byte-level pieces, Gemma <bos> + 大家好
    assert metrics[2:] == ["3,024", "46,080", "216,064", "0.174"]  # overlap only A / shared / only B / Jaccard
    text = tables_text(app)
    assert "49,152" in text and "262,144" in text and "<unused0>" in text
    assert len(charts(app)) == 2  # tokens per character + overlap
    assert not messages(app, "error")


def test_vocabulary_config_only_model_explains():
    app = run_page("views/weights/vocabulary.py", query=CONFIG_ONLY_A)
    assert_clean(app)
    assert any("config only" in m and "128,256 rows" in m for m in messages(app, "info"))
    assert [m.value for m in app.metric] == ["2"]  # Gemma's column still tokenizes
    assert not messages(app, "error")


def test_vocabulary_bad_inputs():
    app = run_page("views/weights/vocabulary.py", query={"vocab_ids": "5, 999999", "vocab_token": "hello world",
                                                  "vocab_text": "x" * 20_001})
    assert_clean(app)
    errors = messages(app, "error")
    assert any("999,999 is out of range" in e for e in errors)
    assert any("is not one token" in e for e in errors)
    assert any("only the first 20,000 are tokenized" in w for w in messages(app, "warning"))


def test_vocabulary_empty_text():
    app = run_page("views/weights/vocabulary.py", query={"vocab_text": " ", "vocab_ids": "abc"})
    assert_clean(app)
    assert any("Type a text" in w for w in messages(app, "warning"))
    assert any("Not a token id: abc" in e for e in messages(app, "error"))
