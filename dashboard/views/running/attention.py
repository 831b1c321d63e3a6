"""Attention (lecture step 7): one head up close, every layer × every head, and head summaries."""

import numpy as np
import streamlit as st

import align_picker
import export
import ui
from attention_data import WINDOW, PageData, is_remote
from core.running.attention import SUMMARY_METRICS, head_csv_table, kv_head_of, layer_kinds, require_attention

SHORT = "the apple is green. what color is the apple?"
LONG = " ".join([
    "An apple is the round fruit of the apple tree. Apple trees are grown all over the world, and the",
    "fruit has been eaten for thousands of years. The tree came from Central Asia, where its wild",
    "ancestor still grows today. Apples were brought to Europe by traders and later to North America by",
    "settlers. There are more than seven thousand kinds of apple, and they differ in colour, size, taste",
    "and texture. Some apples are green, some are yellow, and many are red. A green apple is often sour,",
    "while a red apple is usually sweet. People eat apples raw, bake them in pies and cakes, cook them",
    "into sauce, press them into juice, or ferment them into cider. In many stories the apple stands for",
    "knowledge, health or temptation. A famous saying claims that an apple a day keeps the doctor away.",
    "The company called Apple, which makes the iPhone, the iPad and the Mac, took its name from the",
    "fruit. Its first logo showed Isaac Newton sitting under an apple tree, because an apple falling",
    "from a tree is said to have made Newton think about gravity. So when we read the word apple, we",
    "have to look at the words around it to know whether it means the fruit or the company. This is",
    "exactly what attention does inside a language model: every token looks back at the earlier tokens",
    "and takes a little of the information it needs from each of them. A token like color may look at",
    "the word green, and the second apple may look at the first apple. Many heads, however, put most of",
    "their weight on the very first token, because they have nothing useful to look at and the weights",
    "of a row must always add up to one. Researchers call this the attention sink. When the text gets",
    "longer, each head has more tokens to choose from, and the picture of its attention becomes a large",
    "triangle. The upper half stays empty, because a token can never look at the tokens that come after",
    "it. Farmers pick apples in late summer and autumn. They store them in cold rooms with little oxygen,",
    "so that the fruit stays fresh for many months. A ripe apple gives off a gas called ethylene, which",
    "makes other fruit near it ripen faster. That is why one bad apple can spoil the whole barrel. The",
    "largest growers of apples today are China, the United States, Turkey and Poland. In the autumn many",
    "families visit orchards to pick their own apples, to drink fresh cider, and to eat warm apple pie.",
])
PRESETS = {"The apple is green": SHORT, "A long text (about 500 tokens)": LONG}

st.title("Attention: which earlier tokens each token looks at")
st.markdown(
    "Inside every layer, each **head** lets every token collect information from the tokens before it. "
    "For one head this is a square of weights: **each row is one token looking back**, and the colours "
    "along the row say how much it takes from each earlier token (a row always adds up to 1). The "
    "upper-right triangle is empty because a token can never look at later tokens. Most heads put most "
    "of their weight on the **first token**: they have nothing useful to look at, and since the row must "
    "add up to 1 the weight has to go somewhere. Researchers call this the *attention sink*. Turn on "
    "*Hide the first token* to see where a head looks apart from the sink."
)
prompt = ui.text_input("Prompt", key="attn_prompt", default=SHORT, area=True, height=80)
ui.preset_buttons(PRESETS, "attn_prompt")
options = st.columns(3)
hide_first = options[0].toggle("Hide the first token (renormalise rows)", key="attn_hide_first",
                               help="Drop the first token and rescale each row so it adds up to 1 again.")
log_scale = options[1].toggle("Log colour scale", key="attn_log",
                              help="Make small weights visible: colours span 0.001 to 1 of the maximum.")
shared = options[2].toggle("Same colour scale for every head", value=True, key="attn_shared",
                           help="Off: each small square uses its own scale, so weak heads show their pattern too.")
if not prompt.strip():
    st.warning("Type a prompt, or click a preset.")
    st.stop()


def picked_head(slot, clamp: bool = False) -> tuple[int, int]:
    """The head chosen for slot (layer, head); `clamp` (before the pickers are drawn) fits it to this model."""
    layers, heads = slot.lm.num_layers, slot.lm.num_heads
    keys = f"attn_layer_{slot.label}", f"attn_head_{slot.label}"
    for k, top in zip(keys, (layers - 1, heads - 1)):  # the model may have changed since the last run
        if clamp and k in st.session_state:
            st.session_state[k] = min(int(st.session_state[k]), top)
    return (min(int(st.session_state.get(keys[0], 6)), layers - 1),
            min(int(st.session_state.get(keys[1], 7)), heads - 1))


def open_clicked(label: str) -> None:
    """A click on a summary cell opens that head up close."""
    points = st.session_state.get(f"attn_pick_{label}", {}).get("selection", {}).get("pick", [])
    if points and "layer" in points[0] and "head" in points[0]:
        st.session_state[f"attn_layer_{label}"] = int(points[0]["layer"])
        st.session_state[f"attn_head_{label}"] = int(points[0]["head"])


data = PageData(prompt, hide_first)  # a remote model: what this run draws, in one job
selection = align_picker.pick("attn", prompt, data.usable(ui.current_slots()))

# ---------------------------------------------------------------- one head up close
st.header("One head up close")
st.caption("Pick a layer and a head (or click a square in the summaries below). Hover a cell for its weight. "
           "In the lecture, Llama's layer 6 head 7 sends 'apple' to 'green'; another head sends 'color' to 'green'.")


def up_close(slot) -> None:
    require_attention(slot.lm)  # a model without attention (state-space) gets a plain message in its column
    trace = data.tokens(slot)  # a remote model's from the local tokenizer: no job yet
    if not is_remote(slot):
        require_attention(slot.lm, trace)  # attention that returned no weights: the same, said plainly
    ui.truncation_note(slot, trace)
    row = selection.focus(slot.label) if selection else len(trace.tokens) - 1
    layer, head = picked_head(slot, clamp=True)
    left, right = st.columns(2)
    with left:
        layer = ui.number_input("Layer", f"attn_layer_{slot.label}", layer, 0, slot.lm.num_layers - 1)
    with right:
        head = ui.number_input("Head", f"attn_head_{slot.label}", head, 0, slot.lm.num_heads - 1)
    kinds, kv = layer_kinds(slot.lm), kv_head_of(slot.lm)
    st.caption(f"{len(trace.tokens)} tokens · layer {layer} is a **{kinds[layer]}** layer · head {head} shares "
               f"KV head {kv[head]} with heads {', '.join(str(h) for h in np.flatnonzero(kv == kv[head]))}")
    start = 0
    if len(trace.tokens) > WINDOW:
        align_picker.follow_pick(f"attn_window_{slot.label}", row, WINDOW, len(trace.tokens))
        start = st.slider("Tokens shown (a window of the long prompt)", 0, len(trace.tokens) - WINDOW,
                          key=f"attn_window_{slot.label}",
                          help=f"Up close shows {WINDOW} tokens at a time; the grid below shows all of them.")
    source, at_layer, at_head = data.head(slot, layer, head)  # a remote model: this head (and the rest drawn below)
    export.show_vega_lite(data.head_spec(slot, layer, head, start, log_scale, row),
                          f"attention_{slot.label}_layer{layer}_head{head}_chart", width="stretch",
                          settings={"layer": layer, "head": head, "hide first token": hide_first,
                                    "log scale": log_scale, "window start": start, "picked row": row})
    st.markdown(align_picker.row_summary(source, at_layer, at_head, row, hide_first))
    ui.download_csv(head_csv_table(source.attentions, source.tokens, at_layer, at_head, hide_first),
                    f"attention_{slot.label}_layer{layer}_head{head}.csv", "CSV of this head")


ui.side_by_side(up_close, need_weights=True)

# ---------------------------------------------------------------- the full grid
st.header("Every head of every layer")
st.caption("One small square per head, same layout as above: rows attend to columns, the grey triangle is "
           "'cannot look ahead'. Rows of squares are layers, columns are heads; grey lines group the heads "
           "that share one key/value head; orange layer numbers are sliding-window layers (they only see "
           "recent tokens). The red box is the head shown up close.")


def shown_up_close(slot) -> bool:
    """Whether up close drew this model's head (else it said why, once, in its column)."""
    if not slot.lm.num_heads:
        return False
    return not data.failed(slot) if is_remote(slot) else ui.trace_for(slot, prompt).attentions is not None


def grid(slot) -> None:
    if not shown_up_close(slot):
        return
    selected = picked_head(slot)
    png = data.grid_png(slot, log_scale, shared, selected)
    # The PNG is drawn at the size it is shown: a wider one would be shrunk and re-encoded as JPEG by st.image.
    export.show_image(png, f"attention_grid_{slot.label}_figure", output_format="PNG",
                      settings={"hide first token": hide_first, "log scale": log_scale, "shared scale": shared,
                                "selected (layer, head)": selected})
    st.download_button("PNG of the grid", lambda: png, file_name=f"attention_grid_{slot.label}.png", mime="image/png",
                       key=f"attn_png_{slot.label}", icon=":material/download:", on_click="ignore")


ui.side_by_side(grid, need_weights=True)

# ---------------------------------------------------------------- head summaries
st.header("Head summaries")
metric = ui.selectbox("Summary", list(SUMMARY_METRICS), key="attn_metric", format_func=SUMMARY_METRICS.get)
st.caption("One square per head, averaged over all tokens but the first. Click a square to open that head "
           "up close. The strip on the left marks sliding-window layers (they only see recent tokens).")


def summary(slot) -> None:
    if not shown_up_close(slot):
        return
    table = data.summaries(slot, picked_head(slot))
    export.show_vega_lite(data.summary_spec(slot, picked_head(slot), metric), f"attention_summaries_{slot.label}_chart",
                          settings={"summary": metric}, width="stretch", key=f"attn_pick_{slot.label}",
                          on_select=lambda: open_clicked(slot.label), selection_mode="pick")
    ui.download_csv(table, f"attention_summaries_{slot.label}.csv", "CSV of the summaries")


ui.side_by_side(summary, need_weights=True)
