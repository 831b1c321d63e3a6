"""Embeddings (lecture step 3): nearest tokens in the embedding table, word arithmetic, 2-D maps."""

import pandas as pd
import streamlit as st

import export
import ui
from charts.embeddings import overlap_chart, projection_chart
from core.weights.embeddings import MAX_K, MAX_WORDS, neighbour_overlap, parse_word_groups, visible
from embeddings_data import PageData, query_pieces, runs_table

QUERY_PRESETS = {"apple": "apple", "Apple": "Apple", "李": "李", "王": "王",
                 "leap": "leap", "jump": "jump", "skip": "skip", "hop": "hop"}  # the explainer's leap / jump / skip / hop
ARITHMETIC_DEFAULT = ("冷", "cold", "small", "小")  # a, b, c, the answer hoped for
ARITHMETIC_PRESETS = {  # label -> (a, b, c, the answer hoped for)
    "冷 − cold + small": ARITHMETIC_DEFAULT,
    "king − man + woman": ("king", "man", "woman", "queen"),
    "␣king − ␣man + ␣woman (mid-sentence words)": (" king", " man", " woman", " queen"),
}
PROJECTION_PRESETS = {
    "Fruits vs tech companies": "Fruits: apple, banana, orange, grape, peach, lemon\n"
                                "Tech companies: Apple, Google, Microsoft, Amazon, Samsung, Intel",
    "Chinese / English word pairs": "Chinese: 貓, 狗, 蘋果, 國王, 水, 太陽, 冷, 小\n"
                                    "English: cat, dog, apple, king, water, sun, cold, small",
    "leap / jump / skip / hop": "Jumping: leap, jump, skip, hop\n"
                                "Other verbs: eat, read, sleep, write",
}

st.title("Embeddings: which tokens sit close together")
st.markdown(
    "Every token has a row of numbers in the model's **embedding table**, its vector. Tokens with similar "
    "meaning or spelling end up with vectors that point in similar directions, measured by the **cosine "
    "similarity** (1 = same direction, 0 = unrelated). Here we compare one token's vector with *every* row of "
    "the table and list the closest ones, for model A and model B side by side. In the lecture, Llama's "
    "neighbours of *apple* were *Apple*, *APPLE*, the Chinese 蘋果 and *Cupertino*; the neighbours of 王 "
    "included *king*. A word the tokenizer cuts into several pieces is represented by the average of its "
    "pieces' vectors. A leading space matters: ' apple' (inside a sentence) and 'apple' are different tokens."
)


def neighbour_table(table: pd.DataFrame, filename: str, key: str) -> None:
    st.dataframe(table[["rank", "text", "token_id", "cosine"]], hide_index=True, width="stretch",
                 column_config={"rank": "Rank", "text": "Token", "token_id": "Id",
                                "cosine": st.column_config.ProgressColumn("Cosine", min_value=0.0, max_value=1.0,
                                                                          format="%.3f")})
    ui.download_csv(table.drop(columns=["text"]), filename, key=key)


slots = ui.current_slots()
ready = [s for s in slots if runs_table(s)]

# ---------------------------------------------------------------- nearest tokens
st.header("Nearest tokens")
query = ui.text_input("Token or word (or #1234 for token id 1234)", key="emb_query", default="apple")
ui.preset_buttons(QUERY_PRESETS, "emb_query")
k = ui.number_input("How many neighbours", key="emb_k", default=10, min_value=1, max_value=MAX_K)
if not query.strip():
    st.warning("Type a token or a word, or click a preset.")
data = PageData(k, ARITHMETIC_DEFAULT, PROJECTION_PRESETS["Fruits vs tech companies"])  # a remote model: one job
picked = {}  # slot label -> the query actually used (the whole word or one of its pieces)


def nearest(slot) -> None:
    ids, pieces = query_pieces(slot.key, query)
    used = query
    if len(ids) > 1:
        st.info(f"{ui.short_name(slot.key.source)} cuts '{query}' into {len(ids)} tokens: " + " | ".join(f"`{p}`" for p in pieces)
                + ". The list uses the average of their vectors; you can pick one piece instead.")
        choice = st.selectbox("Use", [-1] + list(range(len(ids))), key=f"emb_piece_{slot.label}_{query}",
                              format_func=lambda i: f"piece {i + 1}: {pieces[i]}" if i >= 0 else "all pieces (average)")
        used = query if choice < 0 else ids[choice]
    neighbour_table(data.neighbours(slot, used), f"nearest_{slot.label}.csv", f"csv-nearest-{slot.label}")
    picked[slot.label] = used  # only once its list exists: the comparison below reuses it


if query.strip():
    ui.side_by_side(nearest, need_weights=True)

# ---------------------------------------------------------------- do the models agree?
st.subheader("Do the two models agree?")
st.caption("The two lists compared as text: the tokenizers' space markers are ignored (␣apple matches apple), "
           "upper/lower case is kept. Jaccard = tokens in both lists ÷ all distinct tokens of the two lists "
           "(1 = the same neighbours, 0 = none in common).")
if len(ready) == 2 and len(picked) == 2:
    lists = [data.neighbours(s, picked[s.label]) for s in ready]
    overlap = neighbour_overlap(*lists)
    left, right = st.columns([1, 3])
    left.metric("Jaccard", f"{overlap.jaccard:.2f}", help="Shared tokens ÷ all distinct tokens of both lists.")
    left.markdown("**In both lists:** " + (", ".join(f"`{visible(t)}`" for t in overlap.shared) or "none"))
    with right:
        export.show_chart(overlap_chart(overlap.table.assign(token=[visible(t) for t in overlap.table["token"]]),
                                        "A", "B"), "nearest_overlap_chart", settings={"k": k}, width="stretch")
    ui.download_csv(overlap.table, "nearest_overlap.csv")
elif query.strip():
    st.info("The comparison needs both models loaded with their weights and a valid query for both.")

# ---------------------------------------------------------------- arithmetic
st.header("Word arithmetic: a − b + c")
st.markdown(
    "Take the vector of **a**, subtract **b**, add **c**, and list the tokens closest to the result (the three "
    "inputs themselves are left out). The lecture's example: 冷 (cold) − cold + small should land near 小 "
    "(small) — the English→Chinese direction carried over. **As the lecture warns, this often fails**: "
    "embedding tables are not built for arithmetic, and a miss is an honest result, not a bug."
)


def use_arithmetic(values) -> None:
    for name, value in zip(("emb_a", "emb_b", "emb_c", "emb_expected"), values):
        st.session_state[name] = value


st.caption("Presets from the lecture")
for column, (label, values) in zip(st.columns(len(ARITHMETIC_PRESETS)), ARITHMETIC_PRESETS.items()):
    column.button(label, key=f"emb-arith-{label}", on_click=use_arithmetic, args=(values,), width="stretch")
inputs = st.columns(4)
with inputs[0]:
    a = ui.text_input("a", key="emb_a", default=ARITHMETIC_DEFAULT[0])
with inputs[1]:
    b = ui.text_input("− b", key="emb_b", default=ARITHMETIC_DEFAULT[1])
with inputs[2]:
    c = ui.text_input("+ c", key="emb_c", default=ARITHMETIC_DEFAULT[2])
with inputs[3]:
    expected = ui.text_input("Answer you hope for (optional)", key="emb_expected", default=ARITHMETIC_DEFAULT[3],
                             help="Shows where this token lands among all tokens of the vocabulary.")


def arithmetic_view(slot) -> None:
    table, attrs = data.arithmetic(slot)
    split = {word: pieces for word, pieces in attrs["pieces"].items() if len(pieces) > 1}
    if split:
        st.caption("Split into pieces (their average is used): " + "; ".join(
            f"'{w}' → " + " | ".join(f"`{visible(p)}`" for p in pieces) for w, pieces in split.items()))
    if "expected_rank" in attrs:
        if attrs["expected_rank"] is None:
            st.caption(f"'{expected}' is not a single token here, so it has no rank.")
        elif attrs["expected_rank"] <= len(table):
            st.success(f"'{visible(expected)}' is number **{attrs['expected_rank']:,}** — it worked.")
        else:
            st.warning(f"'{visible(expected)}' is only number **{attrs['expected_rank']:,}** of "
                       f"{slot.lm.vocab_size:,} tokens — the arithmetic missed here.")
    neighbour_table(table, f"arithmetic_{slot.label}.csv", f"csv-arith-{slot.label}")


if all(x.strip() for x in (a, b, c)):
    ui.side_by_side(arithmetic_view, need_weights=True)
else:
    st.warning("Fill in a, b and c, or click a preset.")

# ---------------------------------------------------------------- projection
st.header("A map of words")
st.markdown(
    "Each word's vector has hundreds of numbers. **PCA** finds the two directions in which the words differ "
    "most and draws every word at its position along them, so words the model treats alike land close "
    "together. Each model gets its own map (its axes mean different things). One group per line, "
    "written as `group: word, word, …`."
)
words_text = ui.text_input(f"Words (3 to {MAX_WORDS})", key="emb_words",
                           default=PROJECTION_PRESETS["Fruits vs tech companies"], area=True, height=90)
ui.preset_buttons(PROJECTION_PRESETS, "emb_words")


def projection(slot) -> None:
    points, explained = data.projection(slot)
    export.show_chart(projection_chart(points, explained=explained), f"word_map_{slot.label}_chart", width="stretch")
    ui.download_csv(points, f"word_map_{slot.label}.csv", key=f"csv-map-{slot.label}")


if len(parse_word_groups(words_text)) >= 3:
    ui.side_by_side(projection, need_weights=True)
else:
    st.warning("Type at least 3 words, or click a preset.")
