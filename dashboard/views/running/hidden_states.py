"""Hidden states (lecture step 4): the vector of every token after every layer, and the causal demo."""

import pandas as pd
import streamlit as st

import align_picker
import export
import hidden_data
import ui
from charts.context import difference_chart
from core.running.context import difference_by_layer

PROMPTS = {"大家好": "大家好", "how are you?": "how are you?", "The apple is green": "the apple is green."}
DEMO = "how about you?\nhow are you?\nnice to meet you"

st.title("Hidden states: one vector per token after every layer")
st.markdown(
    "A model turns each token into a long list of numbers (a **vector**) and then passes the whole row of "
    "vectors through its layers one after another. Entry 0 is the plain **token embedding**, looked up in a "
    "table, so the same token always starts with the same numbers. Every layer then mixes in information from "
    "the tokens **to the left** (never to the right), so from layer 1 on a token's vector depends on its "
    "context: these are *contextualized embeddings* or *hidden states*. The model returns one entry per layer "
    "plus the embeddings, each of shape (1 sentence, tokens, numbers per vector)."
)

# ---------------------------------------------------------------- one prompt
st.header("The hidden states of one prompt")
prompt = ui.text_input("Prompt", key="hs_prompt", default="大家好")
ui.preset_buttons(PROMPTS, "hs_prompt", label="Examples")
if not prompt.strip():
    st.warning("Type a prompt, or click an example.")
    st.stop()

data = hidden_data.PageData(prompt, DEMO, "how, you")  # each model's numbers; a remote model's in one job
selection = align_picker.pick("hs", prompt, data.usable_tokens(ui.current_slots()))


def one_prompt(slot) -> None:
    tokens = data.tokens(slot)
    ui.truncation_note(slot, tokens)
    T = len(tokens.tokens)
    position = selection.focus(slot.label) if selection else T - 1
    view = data.view(slot, position)
    entries, H = view.entries, view.hidden_size
    a, b = st.columns(2)
    a.metric("Hidden-state entries", entries, help=f"{slot.lm.num_layers} layers + the token embeddings (entry 0)")
    b.metric("Shape of each entry", f"(1, {T}, {H})", help="(sentences, tokens, numbers per vector)")
    if position is None:
        st.info("No token of this model covers the picked characters (a start token covers none; text past "
                "the token limit was not run): pick another word.")
        return
    layer = st.slider("Layer", 0, entries - 1, min(1, entries - 1), key=f"hs_layer_{slot.label}_{entries}",
                      help="hidden_states[l]: the input of block l = the output of block l − 1; 0 = the token embeddings")
    vector = view.vector(layer)  # (H,)
    st.caption(f"First values of token {position} {tokens.tokens[position]!r} at entry {layer} "
               f"(of {H}; length of the whole vector: {float((vector**2).sum() ** 0.5):,.2f})")
    st.dataframe(pd.DataFrame([vector[:8]], columns=[f"[{i}]" for i in range(8)]).style.format("{:.4f}"),
                 hide_index=True, width="stretch")
    ui.download_csv(pd.DataFrame({"dimension": range(H), "value": vector}),
                    f"hidden_state_{slot.label}_layer{layer}_token{position}.csv", "CSV of this whole vector")
    with st.expander("Every entry: shape and vector lengths"):
        facts = view.facts()
        st.dataframe(facts, hide_index=True, width="stretch",
                     column_config={"mean_norm": st.column_config.NumberColumn("mean length", format="%.2f"),
                                    "max_norm": st.column_config.NumberColumn("max length", format="%.2f")})
        ui.download_csv(facts, f"hidden_state_entries_{slot.label}.csv")


ui.side_by_side(one_prompt, need_weights=True)

# ---------------------------------------------------------------- the causal demo
st.header("Same word, different sentences")
st.markdown(
    "The lecture's demo: in *how about you?*, *how are you?* and *nice to meet you*, every **you** has the "
    "same vector at layer 0, and different vectors from layer 1 on, because the words before it differ. "
    "**how** stays identical at every layer: it opens its sentence, so there is nothing different to its left "
    "to look at (a begin-of-sentence token, if the model adds one, is the same in every sentence)."
)
ui.text_input("Sentences, one per line", key=hidden_data.SENTENCES_KEY, default=DEMO, area=True, height=100)
ui.preset_buttons({"how / you (lecture)": DEMO}, hidden_data.SENTENCES_KEY)
ui.text_input("Words to follow, separated by commas", key=hidden_data.WORDS_KEY, default="how, you")
if not data.demo_asked():
    st.warning("Type at least two sentences (one per line) and one word.")
    st.stop()


def highlight(row: pd.Series) -> list[str]:
    colour = "background-color: #d4f4dd" if row["identical"] else ""
    return [colour] * len(row)


def demo(slot) -> None:
    table = data.demo(slot)
    summary = difference_by_layer(table)
    export.show_chart(difference_chart(summary), f"same_word_difference_{slot.label}_chart", width="stretch")
    st.caption("0 means the word has exactly the same vector in every sentence that contains it.")
    layer = st.slider("Layer for the table", 0, slot.lm.num_layers, min(1, slot.lm.num_layers),
                      key=f"hs_demo_layer_{slot.label}_{slot.lm.num_layers}")
    shown = table.loc[table["layer"] == layer, ["word", "text", "first_values", "max_difference", "identical"]]
    st.dataframe(shown.style.apply(highlight, axis=1).format({"max_difference": "{:.4g}"}), hide_index=True,
                 width="stretch", column_order=["word", "text", "first_values", "max_difference"],
                 column_config={"text": "sentence", "first_values": "first values",
                                "max_difference": st.column_config.NumberColumn(
                                    "difference", help="Largest |difference| from the word's vector in the first "
                                                       "sentence that contains it")})
    st.caption("Green rows: identical to the word's vector in the first sentence that contains it.")
    ui.download_csv(table, f"same_word_vectors_{slot.label}.csv", "CSV of every layer")


ui.side_by_side(demo, need_weights=True)
