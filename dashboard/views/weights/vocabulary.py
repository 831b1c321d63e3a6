"""Vocabulary (lecture step 2): which tokens each model knows and how it cuts text into them."""

import pandas as pd
import streamlit as st

import export
import ui
from charts.vocabulary import overlap_chart, token_chips, tokens_per_character_chart, visible
from core.text.tokens import MAX_TEXT_CHARS, tokenize
from core.weights.vocabulary import (LECTURE_TEXTS, MULTILINGUAL, added_tokens, embedding_row, find_token, lookup_ids,
                             overlap_examples, parse_ids, special_tokens, tokens_per_character, vocab_facts,
                             vocab_overlap)

MAX_CHIPS = 400  # tokens drawn as chips; the table and CSV have them all

st.title("Vocabulary: the tokens each model knows")
st.markdown(
    "A model never sees letters. Its **tokenizer** cuts text into pieces from a fixed list, the "
    "**vocabulary**, and every piece has a number (its **id**) and a row in the embedding table. "
    "Llama 3 knows 128,256 pieces (128,000 learned plus 256 reserved slots); Gemma 3 about 262,000, twice as "
    "many, so it often needs fewer pieces for the same text, especially for Chinese. Spaces are part of the "
    "pieces: here a leading space is shown as ␣ (the tokenizers themselves write Ġ or ▁)."
)


def needs_tokenizer(render):
    """Config-only models have no tokenizer files: say so instead of drawing the view."""
    def wrapped(slot) -> None:
        if slot.lm.tokenizer is None:
            st.info("No tokenizer: this model is loaded from its config only (see the note at the top).")
            return
        render(slot)
    return wrapped


@st.cache_data(max_entries=16, show_spinner=False)
def facts_for(key) -> dict:
    return vocab_facts(ui.cached_model(key))


@st.cache_data(max_entries=64, show_spinner=False)
def tokens_for(key, text: str) -> pd.DataFrame:
    return tokenize(ui.cached_model(key), text)


@st.cache_resource(max_entries=4, show_spinner="Comparing the two vocabularies…")
def overlap_for(key_a, key_b):
    return vocab_overlap(ui.cached_model(key_a), ui.cached_model(key_b))


slots = ui.current_slots()
with_tokenizer = [s for s in slots if s.lm is not None and s.lm.tokenizer is not None]
for slot in slots:
    if slot.lm is None:
        st.error(f"{slot.title} could not be loaded: {slot.error}")
    elif slot.lm.tokenizer is None:
        st.info(f"{slot.title} is loaded from its config only, without tokenizer files, so its vocabulary "
                f"cannot be shown here; its embedding table has {slot.lm.vocab_size:,} rows, one per token id. "
                "Turn on 'Load the weights' in the sidebar to download the tokenizer too.")

# ---------------------------------------------------------------- facts
st.header("Vocabulary facts")
if with_tokenizer:
    facts = pd.DataFrame({s.title: facts_for(s.key) for s in with_tokenizer})
    facts.index.name = "Fact"
    st.dataframe(facts, width="stretch", height=(len(facts) + 1) * 35 + 3)
    ui.download_csv(facts.reset_index(), "vocabulary_facts.csv")


@needs_tokenizer
def special(slot) -> None:
    st.dataframe(special_tokens(slot.lm), hide_index=True, width="stretch")
    added = added_tokens(slot.lm)
    with st.expander(f"All {len(added):,} added tokens (special, reserved, other)"):
        st.dataframe(added, hide_index=True, width="stretch", height=300)
        ui.download_csv(added, f"added_tokens_{slot.label}.csv")


st.caption("Special tokens mark the start (BOS) and end (EOS) of a text or fill empty places (PAD). "
           "Reserved slots are rows kept free for tokens the makers may add later.")
ui.side_by_side(special)

# ---------------------------------------------------------------- id -> token
st.header("Look up token ids")
ids_text = ui.text_input("Token ids (separated by commas)", key="vocab_ids", default="0, 1, 2, 100")


@needs_tokenizer
def lookup(slot) -> None:
    table = lookup_ids(slot.lm, parse_ids(ids_text))
    st.dataframe(table, hide_index=True, width="stretch")
    ui.download_csv(table, f"token_ids_{slot.label}.csv")


ui.side_by_side(lookup)

# ---------------------------------------------------------------- tokenization
st.header("How each model cuts a text into tokens")
text = ui.text_input("Text", key="vocab_text", default=LECTURE_TEXTS["大家好"], area=True)
ui.preset_buttons(LECTURE_TEXTS | MULTILINGUAL, "vocab_text", "Presets: the lecture's texts and other languages")
if not text.strip():
    st.warning("Type a text, or click a preset.")
elif len(text) > MAX_TEXT_CHARS:
    st.warning(f"The text has {len(text):,} characters; only the first {MAX_TEXT_CHARS:,} are tokenized.")


@needs_tokenizer
def chips(slot) -> None:
    tokens = tokens_for(slot.key, text)
    st.metric("Tokens", f"{len(tokens):,}", help="Including special tokens the tokenizer adds (grey), such as BOS.")
    shown = tokens.head(MAX_CHIPS)
    if len(tokens) > MAX_CHIPS:
        st.info(f"Showing the first {MAX_CHIPS} of {len(tokens):,} tokens; the table and CSV have them all.")
    st.html(token_chips(shown, set(slot.lm.tokenizer.all_special_ids)))
    with st.expander("As a table (token = the vocabulary entry, text = what it reads as)"):
        st.dataframe(tokens, hide_index=True, width="stretch")
    ui.download_csv(tokens, f"tokens_{slot.label}.csv")


if text.strip():
    ui.side_by_side(chips)

st.subheader("Tokens per character, language by language")
st.caption("The same texts in both models, not counting BOS. Fewer tokens per character = the vocabulary has "
           "bigger pieces for that language, so the model reads it faster and fits more of it in its context.")
samples = MULTILINGUAL | ({"Your text": text} if text.strip() else {})
if with_tokenizer:
    per_char = pd.concat([tokens_per_character(s.lm, samples).assign(model=s.title) for s in with_tokenizer],
                         ignore_index=True)
    export.show_chart(tokens_per_character_chart(per_char), "tokens_per_character_chart", width="stretch")
    ui.download_csv(per_char, "tokens_per_character.csv")

# ---------------------------------------------------------------- overlap
st.header("How much the two vocabularies overlap")
st.caption("Entries are compared as the text they stand for (Ġ and ▁ both read as a space), so ␣apple in one "
           "model matches ␣apple in the other. Jaccard = shared ÷ all distinct entries (1 = identical lists).")
if len(with_tokenizer) == 2:
    overlap = overlap_for(slots[0].key, slots[1].key)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Only in A", f"{overlap.only_a:,}")
    m2.metric("Shared", f"{overlap.shared:,}")
    m3.metric("Only in B", f"{overlap.only_b:,}")
    m4.metric("Jaccard", f"{overlap.jaccard:.3f}")
    export.show_chart(overlap_chart(overlap.counts()), "vocabulary_overlap_chart", width="stretch")
    ui.download_csv(overlap.counts(), "vocabulary_overlap_counts.csv")
    find = ui.text_input("Search the examples", key="vocab_overlap_search", placeholder="e.g. apple, 家")
    for tab, where in zip(st.tabs(["Shared", "Only in A", "Only in B"]), ["shared", "only A", "only B"]):
        with tab:
            examples = overlap_examples(overlap, where, find)
            if examples.empty:
                st.info("No entry here contains that text.")
            st.dataframe(examples, hide_index=True, width="stretch", height=300)
            ui.download_csv(examples, f"vocabulary_{where.replace(' ', '_')}.csv", key=f"csv-overlap-{where}")
else:
    st.info("The overlap needs both tokenizers: load both models with their tokenizer files.")

# ---------------------------------------------------------------- embedding row
st.header("A token's row in the embedding table")
st.caption("Each id picks one row of the embedding table: that row of numbers is the token's vector "
           "(lecture: Llama's id 0 is '!', and its row is its embedding). Shown: the first 10 numbers; "
           "norm = the length of the whole vector.")
token_text = ui.text_input("Token (a leading space matters: ' apple' and 'apple' are different tokens)",
                           key="vocab_token", default=" apple")


@needs_tokenizer
def row(slot) -> None:
    if not slot.lm.has_weights:
        st.info(f"{ui.short_name(slot.key.source)} is loaded from its config only: its embedding table has no values.")
        return
    info = embedding_row(slot.lm, find_token(slot.lm, token_text))
    st.markdown(f"id **{info['id']:,}** reads as `{visible(info['token'])}` · norm **{info['norm']:.4f}** "
                f"over {info['size']:,} numbers" +
                (f" (the model multiplies the row by {info['scale']:.2f} when it reads it)" if info["scale"] != 1 else ""))
    values = pd.DataFrame({"dimension": range(len(info["values"])), "value": info["values"]})
    st.dataframe(values, hide_index=True, width="stretch")
    ui.download_csv(values, f"embedding_row_{slot.label}.csv")


ui.side_by_side(row)
