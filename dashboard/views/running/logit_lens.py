"""Logit lens (lecture step 6): what each layer would predict as the next token if the model stopped there."""

import pandas as pd
import streamlit as st

import align_picker
import export
import lens_data
import ui
from charts.lens import trajectory_chart, visible
from core import ModelLoadError
from core.running.lens import first_top1_layer, last_position_table

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


data = lens_data.PageData(prompt, k)  # each model's grid and trajectory; a remote model's in one job
selection = align_picker.pick("lens", prompt, data.usable_tokens(ui.current_slots()))


def picked_position(slot) -> int:
    """The position this model's views read: its last token of the pick; the last token when there is no
    pick or none of its tokens covers the picked characters (e.g. the other model's start token)."""
    focus = selection.focus(slot.label) if selection else None
    return len(data.tokens(slot).tokens) - 1 if focus is None else focus


def lens_of(slot):
    """This model's grid and trajectory at its picked position (core.running.lens_page.LensPage)."""
    return data.page(slot, picked_position(slot))


def grid_window(picked: int, total: int) -> tuple[int, int]:
    """MAX_COLUMNS positions ending at the picked one (the first MAX_COLUMNS when it is near the start)."""
    lo = max(0, picked - MAX_COLUMNS + 1)
    return lo, min(total, lo + MAX_COLUMNS)


# ---------------------------------------------------------------- grid
st.header("Top prediction at every layer and position")
st.caption("Each cell: the token the layer would predict next after that input token (· = a space). "
           "Darker = more confident. The top row is the model's real prediction. The orange outline is the "
           "picked token.")


def grid(slot) -> None:
    view = lens_of(slot)
    ui.truncation_note(slot, view.tokens)
    picked = picked_position(slot)
    lo, hi = grid_window(picked, len(view.tokens.tokens))
    if len(view.tokens.tokens) > MAX_COLUMNS:
        st.info(f"Showing positions {lo}–{hi - 1} of the {len(view.tokens.tokens)} tokens run (the {hi - lo} up to "
                "the picked token); the CSV has every position.")
    export.show_vega_lite(data.grid_spec(slot, picked, lo, hi), f"logit_lens_{slot.label}_chart", width="stretch")
    ui.download_csv(view.table, f"logit_lens_{slot.label}.csv", f"CSV: top-{k} of every layer and position")


ui.side_by_side(grid, need_weights=True)

# ---------------------------------------------------------------- last position
st.header("The picked position: top tokens per layer")
st.caption("The token each layer would predict next after the picked token (default: the last token of the prompt).")


def last_table(slot) -> None:
    position, view = picked_position(slot), lens_of(slot)
    lens = view.table
    st.caption(f"After token {position} {view.tokens.tokens[position]!r}")
    table = last_position_table(lens[lens["position"] == position])
    st.dataframe(table, hide_index=True, width="stretch", height=min(600, 35 * (len(table) + 1) + 3))
    ui.download_csv(table, f"logit_lens_last_position_{slot.label}.csv")


# full width, one model under the other: k columns of "token (probability)" do not fit in half a page
for slot in ui.current_slots():
    st.subheader(slot.title)
    if not ui.runs_text(slot):
        st.warning(slot.error or "Loaded from its config only: turn on 'Load the weights' in the sidebar.")
        continue
    try:
        last_table(slot)
    except (ValueError, ModelLoadError) as error:
        st.error(str(error))

# ---------------------------------------------------------------- trajectory of one token
st.header("Follow one token through the layers")
st.caption("How likely each layer finds one next token after the picked position. Type a word: each model "
           "follows **its own first token** of it, named below the input.")
ui.text_input("Target word or token (empty: each model's own final prediction)", key=lens_data.TARGET_KEY,
              default="", help="Each model uses the first token of this text in its own vocabulary.")
st.toggle("Look the word up as it appears after a space", value=True, key=lens_data.AFTER_SPACE_KEY,
          help="'Paris' becomes ' Paris', the token that follows 'is' in 'The capital of France is'. "
               "Vocabularies have different tokens for ' Paris' and 'Paris'. Words of scripts "
               "without spaces (天氣) have no such token and are looked up as typed; text typed "
               "with a leading space is always used as typed.")
options = st.columns(2)
value = options[0].radio("Show", ["prob", "rank"], key="lens_value", horizontal=True,
                         format_func={"prob": "Probability", "rank": "Rank"}.get)
x_axis = options[1].radio("Horizontal axis", ["relative", "layer"], key="lens_x", horizontal=True,
                          format_func={"relative": "Relative depth", "layer": "Layer number"}.get,
                          help="Relative depth = layer ÷ number of layers, so models of different depth line up.")



def following(slot, tokens, trajectory: pd.DataFrame) -> str:
    """Which token this model follows, and after which position."""
    row = trajectory.iloc[0]
    position = int(row["position"])
    what = (f"its own final prediction `{visible(row['token'])}`" if not row["looked_up"]
            else f"`{visible(row['token'])}` (token id {row['token_id']:,}), the first token of "
                 f"'{visible(row['looked_up'])}'")
    return f"**Model {slot.label}** follows {what} after token {position} `{visible(tokens.tokens[position])}`."


frames = []
for column, slot in zip(st.columns(2), ui.current_slots()):
    with column:
        if not ui.runs_text(slot):
            st.warning(f"Model {slot.label} is not shown: "
                       + (slot.error or "it is loaded from its config only (turn on 'Load the weights')."))
            continue
        try:
            view = lens_of(slot)
        except (ValueError, ModelLoadError) as error:
            st.error(f"Model {slot.label} ({slot.key.source}): {error}")
            continue
        if view.trajectory is None:
            st.error(f"Model {slot.label} ({slot.key.source}): {view.trajectory_error}")
            continue
        trajectory = view.trajectory
        st.markdown(following(slot, view.tokens, trajectory))
        first = first_top1_layer(trajectory)
        st.metric(f"{slot.title}: first layer where {trajectory['token'].iloc[0]!r} is the top prediction",
                  "never" if first is None else f"layer {first} of {slot.lm.num_layers}")
        frames.append(trajectory.assign(model=slot.title))
if frames:
    trajectories = pd.concat(frames, ignore_index=True)
    export.show_chart(trajectory_chart(trajectories, value, x_axis), "logit_lens_trajectory_chart",
                      settings={"show": value, "horizontal axis": x_axis}, width="stretch")
    ui.download_csv(trajectories, "logit_lens_trajectory.csv", "CSV of the trajectories")
