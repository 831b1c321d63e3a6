"""Patchscopes (Ghandeharioun et al. 2024): each model describes, in words, its hidden state of a word, layer by layer."""

import pandas as pd
import streamlit as st

import align_picker
import export
import intervene_ui
import patchscopes_data
import ui
from charts.steering import patchscope_depth_chart
from core.intervene.patchscopes import DESCRIPTION_PROMPT, IDENTITY_PROMPT

PREFIX = "ps"
SOURCES = {  # the lecture's example, and "apple" in a fruit sentence vs a company sentence (the last word is picked)
    "Diana, Princess of Wales": "Diana, Princess of Wales",
    "apple: the fruit": "For breakfast I ate an apple",
    "apple: the company": "The company that makes iPads and AirPods is called apple",
}
TARGETS = {
    "description": "Describe it (entity description, few-shot)",
    "identity": "Repeat it (token identity, few-shot)",
    "own": "My own inspection prompt",
}
HIGHLIGHT = "background-color: rgba(255, 196, 0, 0.28)"

st.title("Patchscopes: let the model say what a hidden state means")
st.markdown(
    "Logit lens reads a hidden state as **one** token. Patchscopes lets the model answer in **words**. "
    "Run the *source* prompt (\"Diana, Princess of Wales\") and take the vector of one word (\"Wales\") at "
    "layer *l* (the input of block *l*, i.e. the output of block *l* − 1; layer 0 is the embedding). Then run an *inspection* prompt that asks for a description of a stand-in word **x**, "
    "e.g. `Syria: Country in the Middle East, …, x:`, and swap x's vector at layer *l* for the one taken "
    "from the source. The model now reads the source word's state in place of x, and what it writes next is "
    "its own description of that state. Doing this for every layer shows how the meaning builds up: in the "
    "paper, early layers of a 7B model read only \"Wales\" (a country), middle layers a royal title, later ones "
    "Diana herself.\n\n"
    "**Small models give weak descriptions.** The embedded pair has 135 M and 270 M parameters, 50 times "
    "fewer than the paper's models: expect repetitions of the examples, and answers that drift to something "
    "unrelated in the last layers (the patched vector there no longer fits what those layers expect)."
)

# ---------------------------------------------------------------- inputs
source = ui.text_input("Source prompt (the text that holds the word to inspect)", key=f"{PREFIX}_source",
                       default=SOURCES["Diana, Princess of Wales"])
ui.preset_buttons(SOURCES, f"{PREFIX}_source", label="Presets: the lecture's example, and apple two ways")
target_kind = ui.selectbox("Inspection prompt", list(TARGETS), key=f"{PREFIX}_target_kind", format_func=TARGETS.get)
placeholder = ui.text_input("Placeholder: the stand-in word whose vector is replaced", key=f"{PREFIX}_placeholder",
                            default="x", help="Its last occurrence in the inspection prompt receives the vector.")
if target_kind == "own":
    target = ui.text_input("Your inspection prompt (must contain the placeholder)", key=f"{PREFIX}_target",
                           default="Tell me about x. Answer:")
else:
    target = DESCRIPTION_PROMPT if target_kind == "description" else IDENTITY_PROMPT
    st.code(target, language=None, wrap_lines=True)
max_new_tokens = ui.number_input("Words to generate (tokens)", key=f"{PREFIX}_tokens", default=10, min_value=1,
                                 max_value=40)
if not source.strip():
    st.warning("Type a source prompt, or click a preset.")
    st.stop()
if not placeholder or placeholder not in target:
    st.error(f'The placeholder "{placeholder}" does not appear in the inspection prompt: write it where the '
             "inspected word should go.")
    st.stop()

selection = align_picker.pick(PREFIX, source, patchscopes_data.usable_tokens(ui.current_slots(), source))
if selection is None:
    st.warning("Neither model could run the source prompt (see the messages below).")
data = patchscopes_data.PageData(source, target, placeholder, max_new_tokens)  # a remote model's sweep: one job


# ---------------------------------------------------------------- one table per model
st.header("What each layer's vector means to the model")
st.caption("One row per layer of the source word's vector. **Answer** is the continuation up to its first comma, "
           "semicolon or line break; highlighted rows are where the answer changes from the layer above. Layer 0 "
           "is the token's own embedding, before any context.")
results: dict[str, tuple[str, pd.DataFrame]] = {}


def render(slot) -> None:
    chat_key = f"{PREFIX}_chat_{slot.label.lower()}"  # the few-shot prompts work best without the chat template
    st.session_state.setdefault(chat_key, st.query_params.get(chat_key, "0") == "1")
    chat = intervene_ui.chat_toggle(slot, PREFIX)
    position = selection.focus(slot.label) if selection is not None else None
    if position is None:
        st.info("No token of this model covers the picked word.")
        return
    tokens = patchscopes_data.source_tokens(slot, source)
    ui.truncation_note(slot, tokens)
    st.caption(f"Reading token {position} `{tokens.tokens[position]}` of the source prompt; the state goes into "
               f'the last "{placeholder}" of the inspection prompt, at the same layer.')
    if ui.remote_of(slot.lm) is not None:
        st.caption("Runs where the model runs, as one job: the source is read and every layer's patched prompt "
                   "generated there; only the new token ids come back.")
    table = data.sweep(slot, position, chat)
    results[slot.label] = slot.title, table
    shown = table[["layer", "answer", "text", "changed"]]
    st.dataframe(shown.style.apply(lambda row: [HIGHLIGHT if row["changed"] else ""] * len(row), axis=1),
                 hide_index=True, width="stretch", height=min(38 + 35 * len(shown), 720),
                 column_order=["layer", "answer", "text"],
                 column_config={"answer": "Answer", "text": "Whole continuation", "layer": "Layer"})
    ui.download_csv(table.drop(columns=["token_ids"]), f"patchscopes_{slot.label}.csv", key=f"ps_csv_{slot.label}")
    intervene_ui.model_text(slot, target, chat)


ui.side_by_side(render, need_weights=True)

# ---------------------------------------------------------------- both models on one depth axis
if results:
    st.header("Both models, by relative depth")
    st.caption("Each dot is one layer (layer ÷ number of layers, so the two models line up). The same answer has "
               "the same colour in both models; the answer is written where it changes. Hover for the whole text.")
    combined = pd.concat([table.assign(model=title) for title, table in results.values()], ignore_index=True)
    combined = combined.drop(columns=["token_ids"])
    export.show_chart(patchscope_depth_chart(combined), "patchscopes_by_depth", table=combined,
                      settings={"inspection prompt": target}, width="stretch")
