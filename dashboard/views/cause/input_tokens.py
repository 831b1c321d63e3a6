"""Which input tokens drove the prediction: occlusion and gradient × input (Shrikumar et al. 2017), on the same characters."""

import math

import pandas as pd
import streamlit as st

import cause_ui
import export
import ui
from charts.cause import shaded_text, token_bars
from core import ModelLoadError
from core.text.align import strip_rows

PREFIX = "it"
PRESETS = {
    "The capital of France is": {f"{PREFIX}_prompt": "The capital of France is", f"{PREFIX}_target": " Paris"},
    "Green apple (lecture)": {f"{PREFIX}_prompt": "the apple is green. what color is the apple?",
                              f"{PREFIX}_target": ""},
    "When Mary and John went to the store, John gave a drink to": {
        f"{PREFIX}_prompt": "When Mary and John went to the store, John gave a drink to", f"{PREFIX}_target": " Mary"},
    "法国的首都是": {f"{PREFIX}_prompt": "法国的首都是", f"{PREFIX}_target": "巴黎"},
}
METHODS = {"occlusion": "Occlusion", "grad_x_input": "Gradient × input", "both": "Both"}
SCORE_TITLE = "Effect on log p(target), nats (orange = helped, blue = hurt)"

st.title("Which input tokens drove the prediction?")
st.markdown(
    "For a prompt and a **target** next token (empty: each model's own top guess), every input token gets a "
    "score: how much it pushed the model towards the target. Two ways to measure it:\n"
    "- **Occlusion**: wipe out one token (set its vector at the model's input to zero) and see how much the "
    "log-probability of the target drops. A score of 1 means: without this token, the target is e ≈ 2.7 "
    "times less likely.\n"
    "- **Gradient × input** (Shrikumar et al. 2017): a one-pass estimate of the same thing from the gradient; "
    "fast, but rougher.\n\n"
    "Both models are written on **the same characters**, one row each, so you can see which words each model "
    "leaned on even though their tokenizers cut the text differently. **Orange** = the token helped the "
    "prediction, **blue** = it pushed against it, white = no effect. The box left of the first character is "
    "the start token (only some models have one)."
)
ui.preset_row(PRESETS, PREFIX)
prompt = ui.text_input("Prompt", key=f"{PREFIX}_prompt", default="The capital of France is")
columns = st.columns(2)
with columns[0]:
    target = ui.text_input("Target next token (optional)", key=f"{PREFIX}_target", default=" Paris",
                           help="Empty: each model's own most likely next token. A leading space matters (' Paris'). "
                                "A longer text means its first token; the page says which.")
with columns[1]:
    method_choice = ui.selectbox("Method", list(METHODS), key=f"{PREFIX}_method", format_func=METHODS.get)
if not prompt.strip():
    st.warning("Type a prompt, or click a preset.")
    st.stop()
methods = ["occlusion", "grad_x_input"] if method_choice == "both" else [method_choice]
target_arg = cause_ui.optional(target)


# Both models go on one strip (the same characters), so each is computed here; a failure is one model's message.
results = {}  # slot label -> (slot, {method: table})
for slot in cause_ui.ready_slots():
    try:
        results[slot.label] = slot, {m: cause_ui.attribution(slot.key, prompt, target_arg, m) for m in methods}
    except (ValueError, ModelLoadError) as error:
        st.error(f"Model {slot.label} ({slot.key.source}): {error}")
if not results:
    st.stop()

for label, (slot, tables) in results.items():
    first = next(iter(tables.values()))
    st.caption(f"**{slot.title}**: target {first.attrs['target']!r}, log p = {first.attrs['logprob']:.2f} "
               f"(probability {math.exp(first.attrs['logprob']):.1%}).")
    cause_ui.notes(first.attrs)

st.header("The prompt, shaded by each token's score")
computed = [m for m in ("occlusion", "grad_x_input") if any(m in tables for _, tables in results.values())]
for method in computed:
    rows = []
    for label, (slot, tables) in results.items():
        table = tables[method]
        row = f"{slot.title} · {METHODS[method]}" if len(computed) > 1 else slot.title
        placed = strip_rows({label: (list(table["token"]), table[["start", "end"]].to_numpy())}, {})
        rows.append(placed.merge(table[["position", "score"]], on="position").assign(row=row))
    strip = pd.concat(rows, ignore_index=True)
    if len(computed) > 1:
        st.subheader(METHODS[method])
    export.show_chart(shaded_text(strip, prompt, SCORE_TITLE), f"input_tokens_shaded_{method}",
                      table=strip.drop(columns=["selected"]), settings={"method": method}, width="content")

st.header("Scores per token")
st.caption("The same scores as bars. Occlusion and gradient × input usually agree on the biggest tokens and "
           "disagree on the small ones. Hover a bar for its number.")


def bars(slot) -> None:
    if slot.label not in results:
        st.info("No scores for this model: see the message above.")
        return
    _, tables = results[slot.label]
    table = pd.concat([t.assign(method=METHODS[m]) for m, t in tables.items()], ignore_index=True)
    export.show_chart(token_bars(table, "Effect on log p(target), nats"), f"input_tokens_bars_{slot.label}",
                      table=table, width="stretch")
    ui.download_csv(table, f"input_tokens_{slot.label}.csv", "CSV of the scores", key=f"csv-it-{slot.label}")


ui.side_by_side(bars, need_weights=True)
