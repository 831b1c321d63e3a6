"""Bad-input matrix, text side: one row per (case, page). Each gives a clear message on the
page and no exception box; both models stay loaded and the page and the model pickers still draw.

Inputs are set through the URL query string, exactly as a shared link would set them.
"""

import pytest

from tests.apptest import assert_clean, run_page

pytestmark = pytest.mark.app

LONG = "apple " * 3400  # 20,400 characters
MIXED = "🍎👩‍👩‍👧 שלום עולם مرحبا بالعالم apple"

# case -> (page, query params, words expected in a message on the page; None = no message needed)
CASES = {
    "empty text (tokenizer)": ("vocabulary", {"vocab_text": ""}, "Type a text"),
    "whitespace only (logit lens)": ("logit_lens", {"lens_prompt": "   \n  "}, "Type a prompt"),
    "whitespace only (attention)": ("attention", {"attn_prompt": " \t "}, "Type a prompt"),
    "empty query (embeddings)": ("embeddings", {"emb_query": ""}, "Type a token or a word"),
    "20,000 characters (tokenizer)": ("vocabulary", {"vocab_text": LONG}, "only the first 20,000 are tokenized"),
    "20,000 characters (logit lens)": ("logit_lens", {"lens_prompt": LONG}, "tokens"),
    "emoji and right-to-left scripts (tokenizer)": ("vocabulary", {"vocab_text": MIXED}, None),
    "emoji and right-to-left scripts (hidden states)": ("hidden_states", {"hs_prompt": MIXED}, None),
    "word missing from a sentence": ("similarity", {"sim_word": "banana"}, "banana"),
    "unknown token id (lookup)": ("vocabulary", {"vocab_ids": "0, 999999999"}, "999,999,999 is out of range"),
    "unknown token id (embeddings)": ("embeddings", {"emb_query": "#99999999"}, "99999999"),
    "unknown tensor name": ("architecture", {"arch_tensor_a": "model.no_such.weight"}, "no_such"),
}


def messages(app) -> str:
    return " ".join(str(m.value) for m in [*app.error, *app.warning, *app.info])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_text_is_a_message(case):
    page, query, expected = CASES[case]
    app = run_page(f"views/{page}.py", query=query)
    assert_clean(app)
    if expected is not None:
        assert expected in messages(app), messages(app)
    slots = app.session_state["_slots"]
    assert all(slot.lm is not None for slot in slots)  # neither model was lost
    assert len(app.title) == 1 and len(app.sidebar.selectbox) >= 2  # the page and the model pickers still draw
