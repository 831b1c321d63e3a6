"""Contextual similarity (lecture step 5): is "apple" the fruit still like "apple" the company, layer by layer?"""

import pandas as pd
import streamlit as st

import export
import similarity_data as data
import ui
from charts.context import similarity_chart
from core import ModelLoadError
from core.running.context import MAX_SENTENCES, pair_label

TWO = "I ate an apple for breakfast\nThe company that makes iPads and AirPods is called apple"
FOUR = "\n".join([
    "I ate an apple for breakfast",
    "She baked an apple pie for dessert",
    "The company that makes iPads and AirPods is called apple",
    "I bought shares of apple, the company behind the iPhone",
])
MODEL_WORD = "\n".join([  # the explainer's example: the same word, two senses
    "a machine learning model",
    "we trained the model on a large dataset",
    "a fashion model",
    "the model walked down the runway in Paris",
])
PRESETS = {"2 sentences: fruit vs company": TWO, "4 sentences: 2 fruit, 2 company": FOUR,
           "model: machine learning vs fashion": MODEL_WORD}
PRESET_WORDS = {name: {"sim_word": "model" if name.startswith("model") else "apple"} for name in PRESETS}
VALUES = {  # similarity_curves column -> label; the first is the default
    "normalized": "Normalized, all sentences",
    "pair_normalized": "Normalized, own two sentences",
    "cosine": "Raw cosine",
}
BASELINE_OF = {"normalized": "baseline", "pair_normalized": "pair_baseline"}

st.title("Contextual similarity: the same word, in different sentences")
st.markdown(
    "Type a few sentences that all contain the same word. At every layer we take the word's vector in each "
    "sentence and measure how alike two of them are (the **cosine similarity**: 1 = pointing the same way, "
    "0 = unrelated). At layer 0 the same token always has the same vector, so the curve starts at 1. "
    "**A falling curve means the model increasingly tells the two uses of the word apart** as it reads the "
    "context (fruit vs company); a curve that stays high means it treats them as the same meaning. Because "
    "in later layers *all* vectors tend to point in similar directions, the **normalized** views divide by "
    "an average cosine of unrelated token pairs at that layer, so layers can be compared fairly. Two "
    "averages are offered:\n"
    "- **Normalized, all sentences** (the default): the average over every pair of tokens taken from two "
    "different sentences, among *all* the sentences typed. Every pair is divided by the same number at a "
    "layer, so the pairs stay comparable with each other (which pair is more alike is never changed by the "
    "division).\n"
    "- **Normalized, own two sentences**: each pair is divided by the average over the tokens of *its own "
    "two sentences* only. This is the lecture's two-sentence recipe applied to every pair; a pair of long or "
    "unusual sentences gets its own yardstick.\n\n"
    "With exactly two sentences both averages are the same number."
)

sentences_text = ui.text_input(f"Sentences, one per line (2 to {MAX_SENTENCES})", key="sim_sentences",
                               default=TWO, area=True, height=130)
ui.preset_buttons(PRESETS, "sim_sentences", also=PRESET_WORDS)
word = ui.text_input("Word to follow", key="sim_word", default="apple")
options = st.columns([1.1, 1.1, 1, 1, 1])
value = options[0].radio("Similarity", list(VALUES), key="sim_value", format_func=VALUES.get,
                         help="Normalized = cosine ÷ the average cosine of token pairs from two different "
                              "sentences: of all the sentences (default), or of the pair's own two sentences.")
x_axis = options[1].radio("Horizontal axis", ["relative", "layer"], key="sim_x", horizontal=True,
                          format_func={"relative": "Relative depth", "layer": "Layer number"}.get,
                          help="Relative depth = layer ÷ number of layers, so models of different depth line up.")
exclude_bos = options[2].toggle("Skip start token", key="sim_exclude_bos",
                                help="The begin-of-sentence token is identical in every sentence and very large; "
                                     "it can dominate the average used for normalizing.")
center = options[3].toggle("Mean-centre", key="sim_center",
                           help="Subtract, at each layer, the average vector of all tokens before comparing. "
                                "This removes the direction every vector shares.")
zoom = options[4].toggle("Leave out layer 0", value=True, key="sim_zoom",
                         help="Layer 0 is the token table itself (raw cosine exactly 1); normalized, it is far "
                              "above the other layers and squeezes them flat.")

sentences = [s.strip() for s in sentences_text.splitlines() if s.strip()]
if not 2 <= len(sentences) <= MAX_SENTENCES or not word.strip():
    st.warning(f"Type between 2 and {MAX_SENTENCES} sentences (one per line) and the word to follow.")
    st.stop()


# Both models go on one chart, so each is computed here; a failure becomes a message for that model only.
frames, pieces = [], {}
for slot in ui.current_slots():
    if not ui.runs_text(slot):
        st.warning(f"Model {slot.label} ({slot.key.source}) is not shown: "
                   + (slot.error or "it is loaded from its config only (turn on 'Load the weights')."))
        continue
    try:
        curves = data.curves(slot.key, tuple(sentences), word.strip(), exclude_bos, center)
        pieces[slot.label] = slot.title, data.pieces(slot.key, tuple(sentences), word.strip())
        data.truncation_notes(slot, tuple(sentences))
    except (ValueError, ModelLoadError) as error:
        st.error(f"Model {slot.label} ({slot.key.source}): {error}")
        continue
    labels = {p: pair_label(sentences, i, j) for p, i, j in curves[["pair", "i", "j"]].drop_duplicates().values}
    frames.append(curves.assign(model=slot.title, label=curves["pair"].map(labels)))

if not frames:
    st.stop()
table = pd.concat(frames, ignore_index=True)
if value in BASELINE_OF and (table[BASELINE_OF[value]].abs() < 0.05).any():
    st.warning("The average cosine is close to 0 at some layers (typical after mean-centring), so dividing by "
               "it exaggerates the curve there. Raw cosine is easier to read in that case.")
export.show_chart(similarity_chart(table[table["layer"] > 0] if zoom else table, value, x_axis), "similarity_curves_chart",
                  settings={"similarity": value, "horizontal axis": x_axis, "skip start token": exclude_bos,
                            "mean-centre": center, "leave out layer 0": zoom}, width="stretch")
st.caption("Colour = sentence pair, line style = model. Hover a point for the raw and normalized values.")
ui.download_csv(table, "similarity_curves.csv", "CSV of every curve")

st.subheader("Which tokens stand for the word")
st.caption("Found through each token's position in the text. A word cut into several tokens is represented by "
           "the average of its pieces.")
for column, (label, (title, table_)) in zip(st.columns(max(len(pieces), 1)), pieces.items()):
    with column:
        st.markdown(f"**{title}**")
        st.dataframe(table_, hide_index=True, width="stretch", column_order=["sentence", "tokens", "positions"],
                     column_config={"tokens": "tokens used", "positions": "token positions"})
        ui.download_csv(table_, f"word_tokens_{label}.csv", "CSV of the tokens")
