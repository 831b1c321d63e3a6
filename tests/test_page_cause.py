"""The Cause pages (activation patching, input tokens, block writes) on the embedded pair, through the entry
script (AppTest), and the explainer presets added to the Contextual similarity and Embeddings pages."""

import pytest

from tests.apptest import assert_clean, run_page

pytestmark = [pytest.mark.app, pytest.mark.embedded]
LAYERS = {"A": 30, "B": 18}  # SmolLM2-135M, Gemma 3 270M


def _button(app, label):
    return next(b for b in app.button if b.label == label)


def _items(app, kind="chart"):
    """What the page drew, as export.show_chart recorded it for the report: {name: Item}."""
    return {item.name: item for item in app.session_state["_export_items"] if item.kind == kind}


def _errors(app):
    return [e.value for e in app.error]


def test_activation_patching_grid_presets_and_both_methods():
    app = run_page("views/cause/activation_patching.py")
    assert_clean(app)
    items = _items(app)
    assert set(items) == {"patching_resid_exact_A", "patching_resid_exact_B"}
    for label, tokens in (("A", 5), ("B", 6)):  # SmolLM2 has no BOS; Gemma adds <bos>
        table = items[f"patching_resid_exact_{label}"].table
        assert len(table) == LAYERS[label] * tokens  # layers × positions
        assert table.attrs["answer"] == " Paris" and table.attrs["foil"] == " Rome"
        # the residual stream at layer 0 at the changed word carries the whole clean run
        changed = table.attrs["differing_positions"]
        assert table[(table.layer == 0) & (table.position == changed[0])]["score"].iloc[0] == pytest.approx(1, abs=1e-4)
        assert (table[table.position < changed[0]]["score"].abs() < 1e-4).all()

    _button(app, "法国 vs 日本 (Chinese)").click().run()
    assert_clean(app)
    assert app.session_state["ap_clean"] == "法国的首都是" and app.session_state["ap_foil"] == "东京"
    assert not _errors(app)
    assert len(_items(app)["patching_resid_exact_A"].table) == 30 * 10

    app.selectbox(key="ap_method").set_value("both").run()
    assert_clean(app)
    items = _items(app)
    assert {"patching_resid_attribution_A", "patching_resid_attribution_B", "patching_agreement"} <= set(items)
    assert len(items["patching_agreement"].table) == 30 * 10 + 18 * 4
    assert [m.label for m in app.metric].count("How well attribution tracks exact patching (Pearson r)") == 2


def test_activation_patching_every_site():
    app = run_page("views/cause/activation_patching.py", query={"ap_site": "all", "ap_method": "attribution"})
    assert_clean(app)
    names = set(_items(app))
    assert names == {f"patching_{site}_attribution_{label}" for site in ("resid", "attn", "mlp") for label in "AB"}


def test_activation_patching_refusals_keep_the_page_working():
    # 意大利 is 13 tokens against 法国's 10 in SmolLM2, but 1 token against 1 in Gemma 3 270M
    app = run_page("views/cause/activation_patching.py",
                   query={"ap_clean": "法国的首都是", "ap_corrupted": "意大利的首都是", "ap_answer": "巴黎", "ap_foil": "罗马"})
    assert_clean(app)
    errors = _errors(app)
    assert len(errors) == 1 and "10 tokens" in errors[0] and "13" in errors[0]
    assert set(_items(app)) == {"patching_resid_exact_B"}  # the other model still shows

    app.text_input(key="ap_clean").set_value("The capital of France is")
    app.text_input(key="ap_corrupted").set_value("The capital of Italy is")
    app.text_input(key="ap_answer").set_value(" Paris")
    app.text_input(key="ap_foil").set_value(" Paris").run()
    assert_clean(app)
    errors = _errors(app)
    assert len(errors) == 2 and all("same token" in e for e in errors)  # answer == foil, for both models

    app.text_input(key="ap_clean").set_value("  ").run()
    assert_clean(app)
    assert any("Type a clean and a corrupted prompt" in w.value for w in app.warning)


def test_input_tokens_shades_both_models_on_the_same_characters():
    app = run_page("views/cause/input_tokens.py", query={"it_method": "both"})
    assert_clean(app)
    items = _items(app)
    assert {"input_tokens_shaded_occlusion", "input_tokens_shaded_grad_x_input",
            "input_tokens_bars_A", "input_tokens_bars_B"} <= set(items)
    strip = items["input_tokens_shaded_occlusion"].table
    assert strip.groupby("row").size().tolist() == [5, 6]  # every token of both models, on one strip
    assert strip["end"].max() == len("The capital of France is")
    assert len(items["input_tokens_bars_B"].table) == 2 * 6  # two methods × Gemma's tokens

    _button(app, "Green apple (lecture)").click().run()
    assert_clean(app)
    assert app.session_state["it_target"] == ""
    assert any("own top next token" in c.value for c in app.caption)

    app.text_input(key="it_prompt").set_value("").run()
    assert_clean(app)
    assert any("Type a prompt" in w.value for w in app.warning)


def test_block_writes_sizes_effects_tokens_and_the_demonstration():
    app = run_page("views/cause/block_writes.py", query={"bw_k": "5"})
    assert_clean(app)
    items = _items(app)
    for label, tokens in (("A", 5), ("B", 6)):
        sizes = items[f"block_write_sizes_mlp_{label}"].table
        assert len(sizes) == LAYERS[label] * tokens
        effects = items[f"block_logit_effects_{label}"].table
        assert effects["logit_effect"].sum() == pytest.approx(
            items[f"block_write_sizes_mlp_{label}"].table.attrs["logit"], abs=1e-2)
        assert len(items[f"block_token_effects_{label}"].table) == 2 * 5  # 5 promoted, 5 suppressed
    for label in "AB":
        reads = items[f"what_blocks_read_{label}"].table
        assert len(reads) == 2 * LAYERS[label]  # attention and MLP at every layer
        mlp, attn = reads[reads.block == "mlp"], reads[reads.block == "attn"]
        assert (mlp["held_output_change"] == 0).all() and (mlp["output_change"] > 0).any()
        assert attn["held_output_change"].max() > 0
    assert any("attention output change" in c.value for c in app.caption)

    app.selectbox(key="bw_block_a").set_value("L3 MLP").run()
    assert_clean(app)
    table = _items(app)["block_token_effects_A"].table
    assert set(zip(table.layer, table.block)) == {(3, "mlp")}

    app.text_input(key="bw_changed").set_value("The apple is very red. What color is the apple?").run()
    assert_clean(app)
    assert sum("tokens and the changed prompt" in e for e in _errors(app)) == 2


def test_explainer_presets_on_similarity_and_embeddings():
    app = run_page("views/running/similarity.py")
    _button(app, "model: machine learning vs fashion").click().run()
    assert_clean(app)
    assert app.session_state["sim_word"] == "model"
    assert "a fashion model" in app.session_state["sim_sentences"]
    assert not _errors(app)

    app = run_page("views/weights/embeddings.py")
    _button(app, "leap / jump / skip / hop").click().run()
    assert_clean(app)
    assert app.session_state["emb_words"].startswith("Jumping: leap, jump, skip, hop")
    _button(app, "hop").click().run()
    assert_clean(app)
    assert app.session_state["emb_query"] == "hop"
    assert not _errors(app)


def test_the_report_holds_every_cause_figure(tiny_folders):
    """The offline report runs the Cause pages headless (as for pages not opened) and keeps every figure."""
    from tests.test_report import report as report_module  # dashboard/report.py, as tests/test_report.py imports it

    # the tiny models' 320-entry tokenizer has " a", " c", " m", " t" as single tokens (equal counts)
    query = {"a": str(tiny_folders["llama"]), "b": str(tiny_folders["gemma3"]), "ap_clean": "the a",
             "ap_corrupted": "the c", "ap_answer": " m", "ap_foil": " t"}
    files = ["views/cause/activation_patching.py", "views/cause/input_tokens.py", "views/cause/block_writes.py"]
    sections = report_module.run_pages_headless(files, query)
    assert [title for title, _ in sections] == ["Activation patching", "Which input tokens mattered",
                                                "What each block writes"]
    # per model: one residual grid; one bar chart (+ one shared shaded strip); two size maps, the logit
    # effects, the promoted/suppressed tokens and the demonstration
    for (_, section), figures in zip(sections, (2, 3, 10)):
        assert 'class="error"' not in section, section[:2000]
        assert section.count('<figure class="figure">') == figures
