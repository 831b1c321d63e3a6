"""Steering (Turner et al. 2023; Arditi et al. 2024): a direction from two lists of prompts, added while generating."""

import numpy as np
import pandas as pd
import streamlit as st

import export
import intervene_ui
import steering_data
import ui
from charts.steering import PICK, sweep_chart
from core import ModelLoadError
from core.intervene.generation import Steer
from core.intervene.steering import PRESETS, check_steer, layer_sweep

PREFIX = "st"
DEPTH_KEY, STRENGTH_KEY = f"{PREFIX}_depth", f"{PREFIX}_strength"
CHART_KEY = f"{PREFIX}_sweep_chart"
SWEEPS = f"_{PREFIX}_sweeps"  # session: {label: (inputs, table)} of the last "Try every layer"


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def use_preset(name: str) -> None:
    preset = PRESETS[name]
    st.session_state.update({
        f"{PREFIX}_positive": "\n".join(preset["positive"]), f"{PREFIX}_negative": "\n".join(preset["negative"]),
        f"{PREFIX}_held_out": "\n".join(preset["held_out"]), f"{PREFIX}_test": preset["test_prompt"],
        f"{PREFIX}_words_1": ", ".join(preset["positive_words"]),
        f"{PREFIX}_words_2": ", ".join(preset["negative_words"]),
        DEPTH_KEY: preset["layer_fraction"], STRENGTH_KEY: preset["strength"],
        f"{PREFIX}_chat_a": preset["chat"], f"{PREFIX}_chat_b": preset["chat"],
    })
    st.session_state.pop(SWEEPS, None)


def take_clicked_layer() -> None:
    """A click on the sweep chart sets the depth slider (before the slider is drawn in this run)."""
    event = st.session_state.get(CHART_KEY)
    points = (event or {}).get("selection", {}).get(PICK) or []
    if points and points != st.session_state.get(f"_{PREFIX}_applied_pick"):
        st.session_state[DEPTH_KEY] = round(float(points[0]["relative_depth"]), 2)
        st.session_state[f"_{PREFIX}_applied_pick"] = points


st.title("Steering: push a model along a direction")
st.markdown(
    "Give two lists of prompts that differ in one way: requests the model refuses vs requests it answers, or "
    "happy vs sad sentences. At a chosen layer, the **direction** is the average vector of the last token of "
    "list 1 minus that of list 2. Adding *strength × direction* to that layer while the model writes pushes it "
    "towards list 1; a **negative strength** pushes it towards list 2. The lecture does this with refusals: "
    "added, the direction makes a model refuse to teach yoga; subtracted, it makes it comply."
)
default = PRESETS["Positive vs negative sentiment"]
st.caption("Presets")
for column, name in zip(st.columns(len(PRESETS)), PRESETS):
    column.button(name, key=f"{PREFIX}_preset_{name}", on_click=use_preset, args=(name,), width="stretch")
take_clicked_layer()

left, right = st.columns(2)
with left:
    positive = lines(ui.text_input("List 1 (the direction points towards these), one prompt per line",
                                   key=f"{PREFIX}_positive", default="\n".join(default["positive"]), area=True,
                                   height=150))
with right:
    negative = lines(ui.text_input("List 2 (… and away from these), one prompt per line", key=f"{PREFIX}_negative",
                                   default="\n".join(default["negative"]), area=True, height=150))
test_prompt = ui.text_input("Test prompt (continued with and without steering)", key=f"{PREFIX}_test",
                            default=default["test_prompt"])
controls = st.columns([2, 2, 1])
with controls[0]:
    depth = ui.slider("Layer, as relative depth (0 = embeddings, 1 = last layer)", DEPTH_KEY,
                      default["layer_fraction"], 0.0, 0.99, 0.01,
                      help="Each model uses its layer nearest to this depth (shown below). Click a point of the "
                           "'Try every layer' chart to set it.")
with controls[1]:
    strength = ui.slider("Strength (negative = subtract the direction)", STRENGTH_KEY, default["strength"],
                         -20.0, 20.0, 0.5)
with controls[2]:
    max_new_tokens = ui.number_input("New tokens", key=f"{PREFIX}_tokens", default=30, min_value=1, max_value=200)
if not positive or not negative or not test_prompt.strip():
    st.warning("Give at least one prompt in each list and a test prompt, or click a preset.")
    st.stop()


def layer_of(lm) -> int:
    return min(lm.num_layers - 1, int(round(depth * lm.num_layers)))


data = steering_data.PageData(positive, negative)  # each model's directions: a remote model's in one job


# ---------------------------------------------------------------- steered vs unsteered, both models
st.header("Continuations, with and without steering")
generate_clicked = st.button("Generate", type="primary", key=f"{PREFIX}_generate",
                             help="Any click while it runs stops it.")
chats: dict[str, bool] = {}


def render(slot) -> None:
    chat_key = f"{PREFIX}_chat_{slot.label.lower()}"  # the default preset (sentiment) continues plain text
    st.session_state.setdefault(chat_key, st.query_params.get(chat_key, "1" if default["chat"] else "0") == "1")
    chat = chats[slot.label] = intervene_ui.chat_toggle(slot, PREFIX)
    layer = layer_of(slot.lm)
    direction = data.directions(slot, chat)[layer]
    data.truncation_notes(slot, chat)
    check_steer(slot.lm, direction, strength)
    st.caption(f"Layer {layer} of {slot.lm.num_layers} · direction length {np.linalg.norm(direction):.2f} · "
               f"adding {strength:g} × direction at every position")
    settings = intervene_ui.GenerationSettings(max_new_tokens, 0.0, 1.0, 0)
    intervene_ui.steered_side_by_side(slot, (f"{PREFIX}_plain", f"{PREFIX}_steered"),
                                      ("Unsteered", f"Steered ({strength:+g} at layer {layer})"), test_prompt, chat,
                                      settings, Steer(layer, direction, strength), run=generate_clicked)
    intervene_ui.model_text(slot, test_prompt, chat)


ui.side_by_side(render, need_weights=True)

# ---------------------------------------------------------------- try every layer
st.header("Try every layer")
st.markdown(
    "Which layer carries the direction best? For each layer, the held-out prompts below are run with the "
    "direction added there, and we measure how the model's **next token** moves: the change in log-odds of "
    "the list-1 words against the list-2 words (above 0: towards list 1). It needs no generation, so it is "
    "quick and it works even where a small model's generated text is noisy. **Click a point** to use that layer."
)
held_out = lines(ui.text_input("Held-out prompts (not in either list), one per line", key=f"{PREFIX}_held_out",
                               default="\n".join(default["held_out"]), area=True, height=100))
word_columns = st.columns(2)
with word_columns[0]:
    words_1 = words(ui.text_input("Words that mean list 1 (comma-separated)", key=f"{PREFIX}_words_1",
                                  default=", ".join(default["positive_words"])))
with word_columns[1]:
    words_2 = words(ui.text_input("Words that mean list 2 (comma-separated)", key=f"{PREFIX}_words_2",
                                  default=", ".join(default["negative_words"])))
score = ui.selectbox("Score", ["shift", "kl"], key=f"{PREFIX}_score",
                     format_func={"shift": "Change in log-odds of the list words",
                                  "kl": "How much the next token changed at all (KL)"}.get)
inputs = (tuple(positive), tuple(negative), tuple(held_out), tuple(words_1), tuple(words_2), strength,
          tuple(sorted(chats.items())))
buttons = st.columns([1, 1, 4])
run_sweep = buttons[0].button("Try every layer", key=f"{PREFIX}_sweep")
if run_sweep:
    cancel = buttons[1].empty()  # shown while the sweep runs; a click reruns the page, which stops the sweep
    cancel.button("Cancel", key=f"{PREFIX}_cancel", help="Stops the sweep (models already done are kept).")
    sweeps = st.session_state.setdefault(SWEEPS, {})
    for slot in ui.current_slots():
        if not ui.runs_text(slot):
            continue
        bar = st.progress(0.0, text=f"{slot.title}: steering every layer…")
        try:
            chat = chats.get(slot.label, False)
            table = layer_sweep(slot.lm, data.directions(slot, chat), held_out, strength, words_1, words_2, chat=chat,
                                on_progress=lambda done, total, bar=bar, slot=slot: bar.progress(
                                    done / total, text=f"{slot.title}: {done} of {total} batches"))
            sweeps[slot.label] = (inputs, table.assign(model=slot.title))
        except (ValueError, ModelLoadError) as error:  # a remote model's failed job too (RemoteError)
            st.error(f"{slot.title}: {error}")
        bar.empty()
    cancel.empty()

done = {label: table for label, (made_with, table) in st.session_state.get(SWEEPS, {}).items() if made_with == inputs}
if done:
    table = pd.concat(done.values(), ignore_index=True)
    export.show_chart(sweep_chart(table, score, chosen_depth=depth), "steering_every_layer", table=table,
                      settings={"strength": strength}, key=CHART_KEY, on_select="rerun", selection_mode=PICK,
                      width="stretch")
    best = table.loc[table.groupby("model")[score].idxmax(), ["model", "layer", "relative_depth", score]]
    st.caption("Largest score per model: " + "; ".join(
        f"{row.model}: layer {row.layer} (depth {row.relative_depth:.2f}, {getattr(row, score):.2f})"
        for row in best.itertuples()))
elif st.session_state.get(SWEEPS):
    st.caption("The inputs have changed since the last sweep: click **Try every layer** again.")
else:
    st.caption("Click **Try every layer** to score every layer of both models.")
