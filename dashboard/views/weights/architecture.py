"""Architecture (lecture step 1): how many parameters, where they live, their shapes and their values."""

import pandas as pd
import streamlit as st

import export
import ui
from charts.architecture import component_chart, histogram_chart, weight_heatmap
from core.weights.architecture import (HEATMAP_COMPONENTS, MAX_BLOCK, aligned_layer, architecture_facts, component_breakdown,
                               find_tensor, gqa_explanation, histogram_frame, layer_choices, matrix_frame,
                               parameter_list, resolve_layer, stats_frame, weight_view)

st.title("Architecture: where the parameters live")
st.markdown(
    "A language model is a long list of numbers (**parameters**) arranged in named matrices. The lecture "
    "counts them (Llama 3.2 3B has about 3.2 billion, Gemma 3 4B about 4.3 billion), lists every matrix "
    "with its shape, and finds the same building blocks in both: an **embedding table** with one row per "
    "token, then a stack of identical **layers**, each with an attention part (q, k, v, o) and a "
    "feed-forward part (gate, up, down). Gemma 3 4B also has a **vision tower** so it can read images. "
    "Models loaded from their config only (no weights) show true shapes here; only the value pictures "
    "at the bottom need the weights."
)


@st.cache_data(max_entries=16, show_spinner=False)
def facts_for(key) -> dict:
    return architecture_facts(ui.cached_model(key))


@st.cache_data(max_entries=16, show_spinner=False)
def breakdown_for(key) -> pd.DataFrame:
    return component_breakdown(ui.cached_model(key))


@st.cache_data(max_entries=32, show_spinner=False)
def params_for(key, one_layer: bool, search: str) -> pd.DataFrame:
    return parameter_list(ui.cached_model(key), one_layer, search)


@st.cache_data(max_entries=32, show_spinner="Reading the weights…")
def view_for(key, name: str, block: int):
    return weight_view(ui.cached_model(key), name, block)


slots = ui.current_slots()
loaded = [s for s in slots if s.lm is not None]
for slot in slots:
    if slot.lm is None:
        st.error(f"{slot.title} could not be loaded: {slot.error}")

# ---------------------------------------------------------------- summary
st.header("The two models in numbers")
st.caption("GQA = grouped-query attention: several query heads share one key/value head, which makes k and v "
           "smaller than q. RoPE θ sets how fast the position signal rotates.")
if loaded:
    facts = pd.DataFrame({s.title: facts_for(s.key) for s in loaded})
    facts.index.name = "Fact"
    st.dataframe(facts, width="stretch", height=(len(facts) + 1) * 35 + 3)
    ui.download_csv(facts.reset_index(), "architecture_summary.csv")

# ---------------------------------------------------------------- components
st.header("Where the parameters live")
st.caption("Parameters counted by role, each shared tensor once. A tied LM head reuses the embedding table, so it "
           "has no bar of its own. Hover a bar for the exact count.")
if loaded:
    breakdown = pd.concat([breakdown_for(s.key).assign(model=s.title) for s in loaded], ignore_index=True)
    log = st.toggle("Log scale (makes the tiny norms visible)", key="arch_log")
    export.show_chart(component_chart(breakdown, log=log), "parameters_by_component_chart",
                      settings={"log scale": log}, width="stretch")
    ui.download_csv(breakdown[["model", "component", "parameters", "tensors", "share", "what"]],
                    "parameters_by_component.csv")

# ---------------------------------------------------------------- named parameters
st.header("Every weight matrix by name")
st.caption("Shapes are written (out, in), as PyTorch stores them: the right-hand number is the size of the "
           "input the matrix reads, the left-hand number the size of what it produces.")
left, right = st.columns([1, 2])
with left:
    one_layer = st.toggle("Show one layer only (layers repeat)", value=True, key="arch_one_layer")
with right:
    search = ui.text_input("Search names", key="arch_search", placeholder="e.g. q_proj, embed, vision")


def named_parameters(slot) -> None:
    table = params_for(slot.key, one_layer, search)
    if table.empty:
        st.warning(f"No parameter name contains '{search}'.")
        return
    dtypes = table["dtype"].unique()
    if len(dtypes) == 1:  # one number format for every tensor: say it once, keep the table narrow
        st.caption(f"Every tensor is stored as {dtypes[0]}. The CSV has the component and dtype of each.")
    shown = table.drop(columns=["component"] + (["dtype"] if len(dtypes) == 1 else []))
    st.dataframe(shown, width="stretch", hide_index=True, height=min(len(table) + 1, 14) * 35 + 3,
                 column_config={"count": st.column_config.NumberColumn(format="localized")})
    ui.download_csv(table, f"parameters_{slot.label}.csv")


ui.side_by_side(named_parameters)

# ---------------------------------------------------------------- aligned layer
st.header("One layer of A next to one layer of B")
choices = layer_choices(max([s.lm.num_layers for s in loaded], default=1))
layer_choice = ui.selectbox("Layer to line up", choices, key="arch_layer", default="first",
                            help="A number past a model's last layer means its last layer.")
if loaded:
    lms = {s.label: s.lm for s in slots}
    layers = {s.label: resolve_layer(s.lm, layer_choice) for s in loaded}
    aligned = aligned_layer(lms["A"], lms["B"], layers.get("A", 0), layers.get("B", 0))
    st.caption("  \n".join(f"**{s.title}**, layer {layers[s.label]}: {gqa_explanation(s.lm)}" for s in loaded))
    st.dataframe(aligned, width="stretch", hide_index=True, height=(len(aligned) + 1) * 35 + 3)
    ui.download_csv(aligned, "aligned_layer.csv")

# ---------------------------------------------------------------- weight values
st.header("Look at the numbers in one matrix")
st.markdown("The lecture prints the top-left 100 × 100 corner of Llama's last-layer `up_proj`: "
            "*you see nothing but numbers*. Red is positive, blue negative, white zero. The second picture "
            "samples evenly across the whole matrix, so even the 262,144-row embedding table shows at once.")


def use_preset(component: str, layer: str) -> None:
    st.session_state["arch_component"], st.session_state["arch_heat_layer"] = component, layer


presets = {"Lecture: last layer's up_proj": ("MLP up", "last"), "Embedding table": ("Embedding table", "last"),
           "First layer's q_proj": ("Attention q", "first")}
for column, (title, args) in zip(st.columns(len(presets)), presets.items()):
    column.button(title, on_click=use_preset, args=args, width="stretch")
c1, c2, c3 = st.columns(3)
with c1:
    component = ui.selectbox("Matrix", HEATMAP_COMPONENTS, key="arch_component")
with c2:
    heat_layer = ui.selectbox("Layer of the matrix", choices, key="arch_heat_layer")
with c3:
    block = ui.number_input("Corner size N (N × N)", key="arch_block", default=100, min_value=10, max_value=MAX_BLOCK)
with st.expander("Or type exact tensor names (from the list above)"):
    typed = {label: ui.text_input(f"Tensor of model {label}", key=f"arch_tensor_{label.lower()}").strip()
             for label in "AB"}


def weights(slot) -> None:
    name = typed[slot.label] or find_tensor(slot.lm, component, resolve_layer(slot.lm, heat_layer))
    if name is None:
        st.info(f"{ui.short_name(slot.key.source)} has no '{component}' matrix" +
                (" (its LM head is tied to the embedding table)." if component.startswith("LM head") else "."))
        return
    if not slot.lm.has_weights:
        st.info(f"`{name}` — {ui.short_name(slot.key.source)} is loaded from its config only, so it has shapes but no values. "
                "Turn on 'Load the weights' in the sidebar to see the numbers.")
        return
    view = view_for(slot.key, name, block)
    st.markdown(f"`{name}` · shape {' × '.join(f'{d:,}' for d in view.shape)}")
    corner = matrix_frame(view.block)
    settings = {"tensor": name, "corner size": block}
    export.show_chart(weight_heatmap(corner, f"Top-left {view.block.shape[0]} × {view.block.shape[1]}"),
                      f"weights_corner_{slot.label}_chart", settings=settings)
    ui.download_csv(corner, f"weights_corner_{slot.label}.csv", "CSV: corner values")
    sample = matrix_frame(view.sample, view.row_step, view.col_step)
    export.show_chart(weight_heatmap(sample, f"Whole matrix: every {view.row_step:,}th row, every {view.col_step:,}th column"),
                      f"weights_sample_{slot.label}_chart", settings=settings)
    ui.download_csv(sample, f"weights_sample_{slot.label}.csv", "CSV: sampled values")
    hist = histogram_frame(view)
    export.show_chart(histogram_chart(hist), f"weights_histogram_{slot.label}_chart", settings=settings, width="stretch")
    ui.download_csv(hist, f"weights_histogram_{slot.label}.csv", "CSV: histogram")
    stats = stats_frame(view)
    st.dataframe(stats, hide_index=True, width="stretch")
    ui.download_csv(stats, f"weights_statistics_{slot.label}.csv", "CSV: statistics")


ui.side_by_side(weights)
