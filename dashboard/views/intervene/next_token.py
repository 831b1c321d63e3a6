"""Next token and generation: the distribution a model puts on the next token, and continuations (greedy or sampled)."""

import numpy as np
import streamlit as st

import export
import intervene_ui
import ui
from charts.intervene import next_token_chart
from charts.lens import visible
from core.intervene.generation import next_token_logits, next_token_table, top_tokens

PRESETS = {
    "The capital of France is": "The capital of France is",
    "Once upon a time": "Once upon a time",
    "What is the capital of France?": "What is the capital of France?",
    "天氣預": "天氣預",
    "the apple is green. what color is the apple?": "the apple is green. what color is the apple?",
}
PREFIX = "nt"

st.title("Next token and generation")
st.markdown(
    "A language model is a function: it reads an unfinished text and gives a **probability for every token** "
    "of its vocabulary to come next. Below are each model's most likely next tokens for your prompt. To write "
    "more than one token, the model picks one, appends it to the text and runs again, token after token: "
    "that is a **continuation**."
)
prompt = ui.text_input("Prompt", key=f"{PREFIX}_prompt", default="The capital of France is")
ui.preset_buttons(PRESETS, f"{PREFIX}_prompt", label="Presets")
if not prompt.strip():
    st.warning("Type a prompt, or click a preset.")
    st.stop()

# ---------------------------------------------------------------- chat template
st.header("What the model reads")
st.caption("Instruct models (the embedded SmolLM2) were trained on conversations in a fixed format. With the chat "
           "template on, the prompt is sent as a user's message in that format and the model writes the "
           "assistant's reply. Base models have no template: the prompt is read as typed.")
chat = {}


def reading(slot) -> None:
    chat[slot.label] = intervene_ui.chat_toggle(slot, PREFIX)
    intervene_ui.model_text(slot, prompt, chat[slot.label])


ui.side_by_side(reading, need_weights=True)

# ---------------------------------------------------------------- next-token distribution
st.header("The next token")
controls = st.columns([1, 3])
with controls[0]:
    k = ui.number_input("Tokens shown", key=f"{PREFIX}_k", default=10, min_value=1, max_value=30)
with controls[1]:
    temperature = ui.slider("Temperature T", f"{PREFIX}_t", 1.0, 0.0, 3.0, 0.05)
st.markdown(
    f"**What the temperature does.** The model gives each token a score; the probabilities are "
    f"softmax(score / T). At **T = 1** they are the model's own. **Below 1** the gaps between scores grow: "
    f"the favourite takes more of the probability (at T = 0 all of it: that is *greedy* decoding). "
    f"**Above 1** the gaps shrink and unlikely tokens get more of a chance, so sampled text gets more varied "
    f"and, far above 1, random. Now: T = {temperature:g}."
)


@st.cache_data(max_entries=32, show_spinner="Running the prompt…")
def logits_for(key, prompt: str, chat: bool) -> np.ndarray:
    return next_token_logits(ui.cached_model(key), prompt, chat=chat)  # (vocab,)


@st.cache_data(max_entries=32, show_spinner="Asking NDIF for the next tokens…")
def remote_table_for(key, prompt: str, chat: bool, k: int, temperature: float):
    """A remote model's table, reduced where it runs (one job; a failed job raises, so is not cached)."""
    return next_token_table(ui.cached_model(key), prompt, k, temperature, chat=chat)


def distribution(slot) -> None:
    if slot.label not in chat:
        return  # the model's column above already shows why it cannot run
    if ui.remote_of(slot.lm) is not None:  # only the rows shown come back: a new k or T is a new job
        table = remote_table_for(slot.key, prompt, chat[slot.label], k, temperature)
    else:
        table = top_tokens(slot.lm, logits_for(slot.key, prompt, chat[slot.label]), k, temperature)
    export.show_chart(next_token_chart(table, temperature), f"next_token_{slot.label}", table=table,
                      settings={"model": slot.key.source, "temperature": temperature, "k": k,
                                "chat template": chat[slot.label]}, width="stretch")
    shown = table.assign(token=table["token"].map(visible))  # a space or line break stays visible (· ↵)
    st.dataframe(shown.style.format({"prob": "{:.2%}"}), hide_index=True, width="stretch")


ui.side_by_side(distribution, need_weights=True)

# ---------------------------------------------------------------- continuation
st.header("Continuation")
st.caption("Greedy decoding always takes the most likely token, so it gives the same text every time. Sampling "
           "draws each token at random from softmax(score / T), among the top-p most likely tokens; the seed "
           "fixes the random draws, so the same settings give the same text again.")
settings = intervene_ui.generation_settings(PREFIX)
buttons = st.columns([1, 1, 4])
clicked = buttons[0].button("Generate", type="primary", icon=":material/play_arrow:", width="stretch")
buttons[1].button("Stop", icon=":material/stop:", width="stretch",
                  help="Stops the generation now (the text so far is kept).")
if clicked:
    intervene_ui.clear_generations(PREFIX)


def continuation(slot) -> None:
    if slot.label not in chat:
        return
    if ui.remote_of(slot.lm) is not None:
        st.caption("This model runs remotely: its continuation is one NDIF job and arrives whole when the job "
                   "ends (nnsight 0.8.1 sends nothing back before), so it is not streamed token by token, and "
                   "Stop only stops waiting for it.")
    if clicked:
        intervene_ui.stream_generation(slot, PREFIX, prompt, chat[slot.label], settings)
    else:
        intervene_ui.show_generation(slot, PREFIX, prompt, chat[slot.label], settings)


ui.side_by_side(continuation, need_weights=True)
