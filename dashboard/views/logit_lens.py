"""Logit lens (lecture step 6): what each layer would predict as the next token if the model stopped there."""

import pandas as pd
import streamlit as st

import ui
from charts.lens import lens_grid_chart, trajectory_chart
from core import ModelLoadError
from core.lens import first_top1_layer, last_position_table, lens_grid, logit_lens, token_trajectory

PRESETS = {"天氣": "天氣", "天氣預": "天氣預", "今天天氣真": "今天天氣真",
           "The capital of France is": "The capital of France is"}
MAX_COLUMNS = 16  # positions drawn in the grid (the last ones); the CSV has them all

st.title("Logit lens: what every layer would predict")
st.markdown(
    "A model only makes its prediction at the very end: the last layer's vector goes through a final "
    "normalization and the **LM head**, which scores every token in the vocabulary. The logit lens applies "
    "the same final step to the vector after **every** layer, as if the model stopped there. Early layers "
    "usually just echo the current token; the guess then changes and, in the last layers, settles on the "
    "real answer. In the lecture, Llama 3.2 3B reads 天氣 and passes through English (*weather*, *forecast*) "
    "before it answers 預. **The trajectory chart below rising towards 1** means a layer is growing confident "
    "in that token; where it falls, the model has changed its mind."
)
prompt = ui.text_input("Prompt", key="lens_prompt", default="天氣")
ui.preset_buttons(PRESETS, "lens_prompt")
k = ui.number_input("Top-k tokens per layer", key="lens_k", default=5, min_value=1, max_value=10)
if not prompt.strip():
    st.warning("Type a prompt, or click a preset.")
    st.stop()


@st.cache_data(max_entries=32, show_spinner="Decoding every layer…")
def lens_for(key, prompt: str, k: int) -> pd.DataFrame:
    return logit_lens(ui.cached_model(key), ui.cached_trace(key, prompt), k)


@st.cache_data(max_entries=64, show_spinner=False)
def trajectory_for(key, prompt: str, target: str) -> pd.DataFrame:
    return token_trajectory(ui.cached_model(key), ui.cached_trace(key, prompt), target or None)


# ---------------------------------------------------------------- grid
st.header("Top prediction at every layer and position")
st.caption("Each cell: the token the layer would predict next after that input token (· = a space). "
           "Darker = more confident. The top row is the model's real prediction.")


@st.cache_data(max_entries=32, show_spinner=False)
def grid_spec(key, prompt: str, k: int) -> dict:
    """The grid's Vega-Lite spec, built and validated once (Altair takes ~0.1 s per grid)."""
    trace = ui.cached_trace(key, prompt)
    cells = lens_grid(lens_for(key, prompt, k), trace, ui.cached_model(key).num_layers)
    return lens_grid_chart(cells[cells["position"] >= len(trace.tokens) - MAX_COLUMNS]).to_dict()


def grid(slot) -> None:
    trace = ui.trace_for(slot, prompt)
    table = lens_for(slot.key, prompt, k)
    if len(trace.tokens) > MAX_COLUMNS:
        st.info(f"Showing the last {MAX_COLUMNS} of {len(trace.tokens)} tokens; the CSV has every position.")
    st.vega_lite_chart(grid_spec(slot.key, prompt, k), width="stretch")
    ui.download_csv(table, f"logit_lens_{slot.label}.csv", f"CSV: top-{k} of every layer and position")


ui.side_by_side(grid, need_weights=True)

# ---------------------------------------------------------------- last position
st.header("The last position: top tokens per layer")


def last_table(slot) -> None:
    table = last_position_table(lens_for(slot.key, prompt, k))
    st.dataframe(table, hide_index=True, width="stretch", height=min(600, 35 * (len(table) + 1) + 3))
    ui.download_csv(table, f"logit_lens_last_position_{slot.label}.csv")


# full width, one model under the other: k columns of "token (probability)" do not fit in half a page
for slot in ui.current_slots():
    st.subheader(slot.title)
    if slot.lm is None or not slot.lm.has_weights:
        st.warning(slot.error or "Loaded from its config only: turn on 'Load the weights' in the sidebar.")
        continue
    try:
        last_table(slot)
    except (ValueError, ModelLoadError) as error:
        st.error(str(error))

# ---------------------------------------------------------------- trajectory of one token
st.header("Follow one token through the layers")
target = ui.text_input("Target token (empty: each model's own final prediction)", key="lens_target", default="",
                       help="Each model uses the first token of this text in its own vocabulary. "
                            "Mind the leading space: ' Paris' and 'Paris' are different tokens.")
options = st.columns(2)
value = options[0].radio("Show", ["prob", "rank"], key="lens_value", horizontal=True,
                         format_func={"prob": "Probability", "rank": "Rank"}.get)
x_axis = options[1].radio("Horizontal axis", ["relative", "layer"], key="lens_x", horizontal=True,
                          format_func={"relative": "Relative depth", "layer": "Layer number"}.get,
                          help="Relative depth = layer ÷ number of layers, so models of different depth line up.")

frames = []
for column, slot in zip(st.columns(2), ui.current_slots()):
    with column:
        if slot.lm is None or not slot.lm.has_weights:
            st.warning(f"Model {slot.label} is not shown: "
                       + (slot.error or "it is loaded from its config only (turn on 'Load the weights')."))
            continue
        try:
            trajectory = trajectory_for(slot.key, prompt, target)
        except (ValueError, ModelLoadError) as error:
            st.error(f"Model {slot.label} ({slot.key.source}): {error}")
            continue
        first = first_top1_layer(trajectory)
        st.metric(f"{slot.title}: first layer where {trajectory['token'].iloc[0]!r} is the top prediction",
                  "never" if first is None else f"layer {first} of {slot.lm.num_layers}")
        frames.append(trajectory.assign(model=slot.title))
if frames:
    trajectories = pd.concat(frames, ignore_index=True)
    st.altair_chart(trajectory_chart(trajectories, value, x_axis), width="stretch")
    ui.download_csv(trajectories, "logit_lens_trajectory.csv", "CSV of the trajectories")
