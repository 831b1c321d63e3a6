"""Home: the two model cards side by side and a tour of the pages."""

import pandas as pd
import streamlit as st

import remote_ui
import ui
from core.model.errors import UnsupportedArchitecture
from core.weights.card import model_card

st.title("Two language models, side by side")
st.markdown(
    "Pick two models in the sidebar. Everything on every page is shown for **model A** and "
    "**model B** next to each other. The default pair ships with the app and works offline: "
    "SmolLM2-135M (a small Llama) and Gemma 3 270M."
)

slots = ui.current_slots()
cards = {}
for slot in slots:
    if slot.lm is None:
        st.error(f"Model {slot.label} ({slot.key.source}) could not be loaded: {slot.error}")
        continue
    try:
        cards[slot.title] = model_card(slot.lm)
    except UnsupportedArchitecture as error:  # an architecture whose parts cannot be found (core/model/parts.py)
        st.error(f"Model {slot.label} ({slot.key.source}): {error}")

st.header("The two models")
if cards:
    table = pd.DataFrame(cards)
    table.index.name = "Fact"
    st.table(table)
    ui.download_csv(table.reset_index(), "model_cards.csv")

remote_ui.remote_section(slots)

st.header("What each page shows")
st.markdown(
    """
- **Architecture** — how many parameters each model has and where they live: the embedding table,
  attention (query/key/value/output), the feed-forward block, norms, and for Gemma 3 4B a vision tower.
  Every weight matrix by name and shape, and a heat map of any matrix.
- **Vocabulary** — the tokens each model knows, how each model cuts the same text into tokens,
  and how much the two vocabularies overlap.
- **Embeddings** — which tokens sit closest to a given token in each model's embedding table
  (for example *apple* next to *Apple*, *iPhone*), word arithmetic, and 2-D maps of word lists.
- **Hidden states** — the vector each token has after every layer, and why the same word gets different
  vectors in different sentences.
- **Contextual similarity** — how similar "apple" the fruit and "Apple" the company are, layer by layer.
- **Hidden-state maps** — a word in many sentences (apple the fruit vs the company, cities by continent)
  drawn as points, layer by layer, with a number for how well the groups separate.
- **Logit lens** — what each layer would predict as the next token if the model stopped there.
- **Attention** — which earlier tokens each token looks at, for every head of every layer.

*Intervene* — make the models do something:
- **Next token and generation** — each model's next-token probabilities, how temperature reshapes them,
  and a continuation written token by token (greedy or sampled, with the chat template for instruct models).
- **Patchscopes** — let the model put a hidden state into words, layer by layer ("Diana, Princess of Wales").
- **Steering** — add a direction (refuse vs comply, happy vs sad, French vs English) at one layer and see
  the text change; try every layer to find where it works best.

*Cause* — ask where the answer comes from:
- **Activation patching** — run "The capital of Italy is" but put back one value of "… France is" (one layer,
  one token): where does that alone bring " Paris" back? Exact, or estimated from gradients.
- **Which input tokens mattered** — every input token scored by how much it pushed the model to its answer,
  both models shaded on the same characters.
- **What each block writes** — how much each attention and MLP block adds at every token, its direct push on
  the answer, the tokens it promotes, and the proof that attention reads other tokens while the MLP does not.
"""
)
st.header("Memory: what this server holds")
st.write("Loaded models and computed traces are kept for every user of this server. Unload them to free "
         "memory; the models chosen in the sidebar are loaded again on the next click.")
models, traces = ui.cache_contents()
if len(models):
    st.table(models.set_index("model"))
else:
    st.caption("No model is loaded.")
st.write(traces)
budget_gib = st.number_input("Trace cache budget (GiB)", min_value=0.0, value=ui.trace_budget_gib(), step=0.5,
                             help="Traces beyond this are dropped, least recently used first.")
ui.set_trace_budget_gib(budget_gib)
unload, clear = st.columns(2)
if unload.button("Unload all models", width="stretch"):
    ui.unload_models()
    st.rerun()
if clear.button("Clear the traces", width="stretch"):
    ui.trace_store().clear()
    st.rerun()
