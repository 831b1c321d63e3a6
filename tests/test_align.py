"""One word, both tokenizers (core.text.align), the lens's "follow a word", the truncation note, and the
three pages that share the picker.

The expected tokens are computed here from sets of character indices (which characters each
token's offset span holds), independently of core.text.align's interval arithmetic.
"""

import json

import numpy as np
import pyarrow as pa
import pytest
import regex
import torch

from core import run_trace
from core.text.align import (alignment_table, covering_tokens, select, shared_segments, strip_rows, tokens_span,
                        word_spans)
from core.running.lens import first_top1_layer, target_lookup, token_trajectory
from core.text.tokens import encode
from tests.test_lens import PROMPT, forward, numpy_norm_head, softmax

PROMPTS = ["大家好", "天氣預報說明天會下雨", "Café naïve 👍🏽 ok", "e\u0301te\u0301 à Paris",
           "🍎👩‍👩‍👧 שלום עולם مرحبا apple", "the apple is green. what color is the apple?"]


def chars_of(offsets, position) -> set[int]:
    start, end = offsets[position]
    return set(range(start, end))


def expected_cover(offsets, span: set[int]) -> list[int]:
    """Positions whose characters meet `span`, by set intersection."""
    return [p for p in range(len(offsets)) if chars_of(offsets, p) & span]


# ---------------------------------------------------------------- pure functions (no model)


def test_word_spans_examples():
    cases = {
        "Café naïve 👍🏽 ok": ["Café", "naïve", "👍🏽", "ok"],
        "e\u0301te\u0301 à Paris": ["e\u0301te\u0301", "à", "Paris"],  # combining accents stay in the word
        "don't stop!": ["don't", "stop", "!"],
        "大家好，世界": ["大家好", "，", "世界"],
        "🍎👩‍👩‍👧 שלום": ["🍎👩‍👩‍👧", "שלום"],  # the ZWJ family emoji is one symbol run
        "  \n ": [],
    }
    for text, words in cases.items():
        assert [text[s:e] for s, e in word_spans(text)] == words, text
    assert word_spans("one two three", limit=7) == [(0, 3), (4, 7)]


@pytest.mark.parametrize("text", PROMPTS + ["a\u0301\u0302b 👍🏽👍 x"])
def test_word_spans_never_cut_a_grapheme_and_cover_every_visible_character(text):
    graphemes = [m.span() for m in regex.finditer(r"\X", text)]  # Unicode extended grapheme clusters
    spans = word_spans(text)
    inside = {c for s, e in spans for c in range(s, e)}
    for s, e in spans:
        assert not any(gs < s < ge or gs < e < ge for gs, ge in graphemes), (text, s, e)
        assert not any(text[c].isspace() for c in range(s, e))
    assert inside == {c for c, ch in enumerate(text) if not ch.isspace()}


def test_covering_tokens_on_byte_pieces_and_bos():
    offsets = np.array([(0, 0), (0, 1), (1, 2), (1, 2), (2, 4)])  # BOS, 大, two byte pieces of 家, 好!
    assert covering_tokens(offsets, 1, 2) == [2, 3]
    assert covering_tokens(offsets, 0, 4) == [1, 2, 3, 4]  # BOS covers no character
    assert covering_tokens(offsets, 0, 0) == [0]  # an empty span picks the start token
    assert tokens_span(offsets, [2, 4]) == (1, 4)
    rows = strip_rows({"A": (("<bos>", "大", "<E5>", "<AE>", "好!"), offsets)}, {"A": [2]})
    pieces = rows[rows["position"].isin([2, 3])]
    assert pieces[["x0", "x1"]].values.tolist() == [[1.0, 1.5], [1.5, 2.0]]  # two pieces split one character
    assert rows.loc[rows["position"] == 0, ["x0", "x1"]].values.tolist() == [[-1.0, 0.0]]
    assert rows["selected"].tolist() == [False, False, True, False, False]


# ---------------------------------------------------------------- the embedded pair's real tokenizers


@pytest.fixture(scope="module")
def pair_offsets(smollm, gemma270m):
    return {text: {"A": np.array(encode(smollm, text)[1]), "B": np.array(encode(gemma270m, text)[1])}
            for text in PROMPTS}


@pytest.mark.embedded
def test_tokenizers_of_the_pair_really_differ(pair_offsets):
    offsets = pair_offsets["大家好"]
    assert (offsets["A"][:, 1] > offsets["A"][:, 0]).all()  # SmolLM2 adds no start token
    assert tuple(offsets["B"][0]) == (0, 0)  # Gemma does
    picked = select(offsets, span=(0, 3))
    assert len(picked.positions["A"]) == 5 and picked.positions["B"] == (1,)  # byte pieces vs one token
    assert select(offsets, token=("B", 0)).positions == {"A": (), "B": (0,)}  # BOS: nothing in SmolLM2


@pytest.mark.embedded
@pytest.mark.parametrize("text", PROMPTS)
def test_picking_in_one_model_selects_the_covering_tokens_of_the_other(text, pair_offsets):
    offsets = pair_offsets[text]
    length = len(text)
    for label, other in (("A", "B"), ("B", "A")):
        for position in range(len(offsets[label])):
            span = chars_of(offsets[label], position)
            if not span:
                continue
            picked = select(offsets, token=(label, position))
            got = list(picked.positions[other])
            assert got == expected_cover(offsets[other], span)
            covered = set().union(*(chars_of(offsets[other], p) for p in got))
            assert span <= covered  # the other model's tokens hold every picked character…
            assert all(chars_of(offsets[other], p) & span for p in got)  # …and each one holds one of them
            assert picked.positions[label] == (position,) and picked.focus(other) == got[-1]
    for start, end in word_spans(text):
        span = set(range(start, end))
        picked = select(offsets, span=(start, end))
        for label in ("A", "B"):
            assert list(picked.positions[label]) == expected_cover(offsets[label], span)
    assert max(e for _, e in offsets["A"]) == max(e for _, e in offsets["B"]) == length


@pytest.mark.embedded
@pytest.mark.parametrize("text", PROMPTS)
def test_shared_spans_are_the_smallest_cuts_both_models_make(text, pair_offsets, smollm):
    offsets = pair_offsets[text]
    segments = shared_segments(list(offsets.values()), len(text))
    spans = [chars_of(o, p) for o in offsets.values() for p in range(len(o))]
    assert [c for s, e in segments for c in range(s, e)] == list(range(len(text)))  # in order, every character
    for s, e in segments:
        assert not any(min(t) < s <= max(t) for t in spans if t)  # no token crosses a cut
        for c in range(s + 1, e):  # every cut inside a segment is crossed by some token of one model
            assert any(min(t) < c <= max(t) for t in spans if t)
    table = alignment_table(text, {label: (list(map(str, range(len(o)))), o) for label, o in offsets.items()})
    assert "".join(table["text"]) == text
    for (s, e), positions in zip(segments, table["positions A"]):
        assert positions == ", ".join(map(str, expected_cover(offsets["A"], set(range(s, e)))))


# ---------------------------------------------------------------- the lens follows a word, at the picked position


def test_trajectory_at_a_picked_position_matches_an_independent_lens(tiny_llama):
    logits, hidden = forward(tiny_llama, PROMPT)
    position = 4
    default = token_trajectory(tiny_llama, PROMPT, None, position=position)
    target = int(logits[position].argmax())  # the model's own prediction after token 4
    assert default["token_id"].iloc[0] == target and default["rank"].iloc[-1] == 1
    assert (default["position"] == position).all()
    for layer, h in enumerate(hidden):
        layer_logits = logits[position] if layer == len(hidden) - 1 else numpy_norm_head(tiny_llama, h[position])
        assert default["rank"].iloc[layer] == int((layer_logits > layer_logits[target]).sum()) + 1
        assert default["prob"].iloc[layer] == pytest.approx(softmax(layer_logits)[target], rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="outside"):
        token_trajectory(tiny_llama, PROMPT, None, position=999)


@pytest.mark.embedded
@pytest.mark.parametrize("name", ["smollm", "gemma270m"])
def test_a_word_is_followed_by_each_models_first_token_after_a_space(name, request):
    lm = request.getfixturevalue(name)

    def first(text):
        return lm.tokenizer(text, add_special_tokens=False)["input_ids"][0]

    assert target_lookup(lm, "Paris") == (" Paris", first(" Paris"))  # the word as it follows "is"
    assert lm.tokenizer.decode([first(" Paris")]) == " Paris"
    assert target_lookup(lm, "Paris", after_space=False) == ("Paris", first("Paris")) != (" Paris", first(" Paris"))
    assert target_lookup(lm, " Paris") == (" Paris", first(" Paris"))  # typed with its space: as typed
    assert target_lookup(lm, "天氣") == ("天氣", first("天氣"))  # Chinese puts no space before a word
    trajectory = token_trajectory(lm, "The capital of France is", "Paris", after_space=True)
    assert trajectory["looked_up"].iloc[0] == " Paris" and trajectory["token_id"].iloc[0] == first(" Paris")


# ---------------------------------------------------------------- the truncation note


def test_truncation_note_names_the_counts_and_the_last_character_seen(tiny_llama):
    from ui import ModelKey, Slot, truncation_text

    prompt = "the apple is green. " * 6
    encoded = tiny_llama.tokenizer(prompt, return_offsets_mapping=True)  # the tokenizer itself, not core
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    trace = run_trace(tiny_llama, prompt, max_tokens=9)
    slot = Slot("A", ModelKey("tiny"), tiny_llama, None)
    note = truncation_text(slot, trace)
    assert trace.truncated and trace.total_tokens == len(ids)
    assert f"the prompt has {len(ids):,} tokens; only the first 9 were run" in note
    assert "'last position' is token 9 (position 8" in note
    assert f"The text after character {offsets[8][1]:,} (of {len(prompt):,}) was not seen" in note
    assert truncation_text(slot, run_trace(tiny_llama, "the apple")) is None


# ---------------------------------------------------------------- the three pages (AppTest, embedded pair)


def outlined_cells(app) -> list:
    """The cells each chart of the page outlines in orange (an unfilled rect layer), chart by chart."""
    found = []
    for chart in app.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        data = {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets}
        for layer in spec.get("layer", []):
            mark = layer.get("mark", {})
            if isinstance(mark, dict) and mark.get("fillOpacity") == 0 and "data" in layer:
                found.append(data[layer["data"]["name"]])
    return found


@pytest.mark.app
@pytest.mark.embedded
def test_hidden_states_page_picking_a_token_of_a_selects_gemmas_covering_token(gemma270m):
    from tests.apptest import assert_clean, run_page

    # SmolLM2 token 1 is the first byte piece of 家 (character 1); Gemma holds 大家好 in one token (position 1)
    app = run_page("views/running/hidden_states.py", query={"hs_prompt": "大家好", "hs_pick_by": "A", "hs_tok_a": "1"})
    assert_clean(app)
    offsets = np.array(encode(gemma270m, "大家好")[1])
    expected = expected_cover(offsets, {1})
    assert expected == [1]
    previews = [frame.value for frame in app.dataframe if list(frame.value.columns)[:2] == ["[0]", "[1]"]]
    assert len(previews) == 2
    with torch.inference_mode():  # Gemma's layer-1 vector of that token, from its own forward pass
        out = gemma270m.model(input_ids=torch.tensor([encode(gemma270m, "大家好")[0]]), output_hidden_states=True)
    np.testing.assert_allclose(previews[1].iloc[0].to_numpy(dtype=float),
                               out.hidden_states[1][0, expected[-1], :8].double().numpy(), rtol=1e-4, atol=1e-5)
    assert any("**B**: 1: `大家好`" in m.value for m in app.markdown)
    assert app.query_params["hs_tok_a"] == "1"


@pytest.mark.app
@pytest.mark.embedded
def test_logit_lens_page_picking_france_in_a_follows_gemmas_france(gemma270m):
    from tests.apptest import assert_clean, run_page

    prompt = "The capital of France is"
    app = run_page("views/running/logit_lens.py", query={"lens_prompt": prompt, "lens_pick_by": "A", "lens_tok_a": "3",
                                                 "lens_target": "Paris"})
    assert_clean(app)
    ids, offsets = encode(gemma270m, prompt)
    france = expected_cover(np.array(offsets), set(range(prompt.index(" France"), prompt.index(" is"))))
    assert france == [4]  # after Gemma's start token
    following = [m.value for m in app.markdown if "follows" in m.value]
    assert following[1].startswith("**Model B** follows `·Paris`") and "after token 4 `·France`" in following[1]
    # the picked-position table of B: its last layer is Gemma's own prediction after " France"
    with torch.inference_mode():
        logits = gemma270m.model(input_ids=torch.tensor([ids])).logits[0, 4].float()
    tables = [frame.value for frame in app.dataframe if "top 1" in frame.value.columns]
    predicted = gemma270m.tokenizer.decode([int(logits.argmax())])
    assert tables[1]["top 1"].iloc[-1].startswith(repr(predicted))
    grids = outlined_cells(app)  # each model's lens grid outlines the picked column: every layer, one position
    assert [sorted(set(cells["position"])) for cells in grids] == [[3], [4]]
    assert len(grids[1]) == gemma270m.num_layers + 1
    metric = [m for m in app.metric if m.label.startswith("Model B")][0]
    trajectory = token_trajectory(gemma270m, run_trace(gemma270m, prompt), " Paris", position=4)
    first = first_top1_layer(trajectory)
    assert metric.value == ("never" if first is None else f"layer {first} of 18")


@pytest.mark.app
@pytest.mark.embedded
def test_attention_page_picking_a_word_outlines_each_models_row(smollm, gemma270m):
    from tests.apptest import assert_clean, run_page

    prompt = "the apple is green. what color is the apple?"
    start = prompt.index("green")
    app = run_page("views/running/attention.py", query={"attn_prompt": prompt, "attn_word": f"{start}-{start + 5}"})
    assert_clean(app)
    rows = []
    for lm in (smollm, gemma270m):
        rows.append(expected_cover(np.array(encode(lm, prompt)[1]), set(range(start, start + 5)))[-1])
    assert rows == [3, 4]
    summaries = [m.value for m in app.markdown if m.value.startswith("The outlined row")]
    assert [s.split("`")[0] for s in summaries] == [f"The outlined row is the picked token {r} " for r in rows]
    outlined = outlined_cells(app)
    assert len(outlined) == 2
    for cells, row in zip(outlined, rows):  # the whole causal row of the picked token: keys 0..row
        assert set(cells["query_pos"]) == {row} and sorted(cells["key_pos"]) == list(range(row + 1))
