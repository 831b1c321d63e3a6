"""Bad-input matrix, text side: one row per (case, page). Each gives a clear message on the
page (or, for text that is unusual but fine, shows exactly what the tokenizer makes of it) and
no exception box; both models stay loaded and the page and the model pickers still draw.

Inputs are set through the URL query string, exactly as a shared link would set them.
Expected numbers come from each model's own tokenizer, called here, not from the page's code.
"""

import pytest

from core.running.trace import MAX_TRACE_TOKENS
from tests.apptest import assert_clean, page_file, run_page

pytestmark = pytest.mark.app

LONG = "apple " * 3400  # 20,400 characters
MIXED = "🍎👩‍👩‍👧 שלום עולם مرحبا بالعالم apple"


def messages(app) -> str:
    return " ".join(str(m.value) for m in [*app.error, *app.warning, *app.info])


def lens_says_where_the_prompt_was_cut(app) -> None:
    """Each model's note gives the prompt's real token count, the 512 run, and the last character seen."""
    notes = [str(w.value) for w in app.warning]
    for slot in app.session_state["_slots"]:
        encoded = slot.lm.tokenizer(LONG, return_offsets_mapping=True)
        total = len(encoded["input_ids"])
        assert total > MAX_TRACE_TOKENS  # the case really is over the limit
        seen = encoded["offset_mapping"][MAX_TRACE_TOKENS - 1][1]  # end of the last token that was run
        note = [n for n in notes if f"Model {slot.label}" in n]
        assert len(note) == 1, notes
        for number in (total, MAX_TRACE_TOKENS, seen):
            assert f"{number:,}" in note[0], (number, note[0])
        assert "last position" in note[0]


def tokens_shown_exactly(app) -> None:
    """No error or warning; each model's token table holds its tokenizer's ids, each piece's text is its span."""
    assert not app.error and not app.warning, messages(app)
    tables = [frame.value for frame in app.dataframe if {"token_id", "start", "end"} <= set(frame.value.columns)]
    slots = app.session_state["_slots"]
    assert len(tables) == len(slots) == 2
    for slot, table in zip(slots, tables):
        ids = slot.lm.tokenizer(MIXED)["input_ids"]
        assert table["token_id"].tolist() == ids
        assert [m.value for m in app.metric if m.label == "Tokens"][slots.index(slot)] == f"{len(ids):,}"
        for text, start, end in table[["text", "start", "end"]].itertuples(index=False):
            if end > start and not text.startswith("<"):  # whole characters: the text is the span itself
                assert text.strip() == MIXED[start:end].strip()
        covered = {i for start, end in zip(table["start"], table["end"]) for i in range(start, end)}
        assert covered >= {i for i, ch in enumerate(MIXED) if not ch.isspace()}  # every character is in a token
    smol_texts = tables[0]["text"].tolist()
    assert "<F0 9F>" in smol_texts  # SmolLM2 cuts the emoji into byte pieces, shown as hex bytes


def hidden_states_of_every_token(app) -> None:
    """No error; each model's entries have one vector per token its tokenizer makes of the text."""
    assert not app.error, messages(app)
    shapes = [m.value for m in app.metric if m.label == "Shape of each entry"]
    slots = app.session_state["_slots"]
    hidden = [s.lm.text_config.hidden_size for s in slots]
    assert shapes == [f"(1, {len(s.lm.tokenizer(MIXED)['input_ids'])}, {h})" for s, h in zip(slots, hidden)]


# case -> (page, query params, words expected in a message on the page, or a check of the page)
CASES = {
    "empty text (tokenizer)": ("vocabulary", {"vocab_text": ""}, "Type a text"),
    "whitespace only (logit lens)": ("logit_lens", {"lens_prompt": "   \n  "}, "Type a prompt"),
    "whitespace only (attention)": ("attention", {"attn_prompt": " \t "}, "Type a prompt"),
    "empty query (embeddings)": ("embeddings", {"emb_query": ""}, "Type a token or a word"),
    "20,000 characters (tokenizer)": ("vocabulary", {"vocab_text": LONG}, "only the first 20,000 are tokenized"),
    "20,000 characters (logit lens)": ("logit_lens", {"lens_prompt": LONG}, lens_says_where_the_prompt_was_cut),
    "emoji and right-to-left scripts (tokenizer)": ("vocabulary", {"vocab_text": MIXED}, tokens_shown_exactly),
    "emoji and right-to-left scripts (hidden states)": ("hidden_states", {"hs_prompt": MIXED},
                                                        hidden_states_of_every_token),
    "word missing from a sentence": ("similarity", {"sim_word": "banana"}, "banana"),
    "word missing from a sentence (hidden-state maps)": (
        "hidden_state_maps", {"maps_items": "A: an apple\nA: a red apple\nB: a pear\nB: an apple pie", "maps_word": "apple"},
        'The word "apple" does not appear in sentence 3 "a pear"'),
    "unknown token id (lookup)": ("vocabulary", {"vocab_ids": "0, 999999999"}, "999,999,999 is out of range"),
    "unknown token id (embeddings)": ("embeddings", {"emb_query": "#99999999"}, "99999999"),
    "unknown tensor name": ("architecture", {"arch_tensor_a": "model.no_such.weight"}, "no_such"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_text_is_a_message(case):
    page, query, expected = CASES[case]
    app = run_page(page_file(page), query=query)
    assert_clean(app)
    if callable(expected):
        expected(app)
    else:
        assert expected in messages(app), messages(app)
    slots = app.session_state["_slots"]
    assert all(slot.lm is not None for slot in slots)  # neither model was lost
    assert len(app.title) == 1 and len(app.sidebar.selectbox) >= 2  # the page and the model pickers still draw
