"""Hidden-state maps (lecture step 3's projections, for words in context): do the groups separate, layer by layer?"""

import pandas as pd
import streamlit as st

import export
import ui
from charts.maps import map_chart, separation_chart, separation_long
from core.running.maps import MAX_ITEMS, PRESETS, layer_at_depth, parse_items
from maps_data import maps_for, truncation_notes

POOLING = {"mean": "the average of its tokens", "last": "its last token"}

st.title("Hidden-state maps: words in context, drawn on a page")
st.markdown(
    "Pick a word in many sentences and sort the sentences into **groups** — *apple* the fruit and *apple* "
    "the company, or city names by continent. Each sentence becomes **one dot**: the word's vector (its "
    "*hidden state*) after the layer you choose. A vector has hundreds of numbers, so to draw it we keep the "
    "two directions along which the dots differ most (**PCA**, principal component analysis); the axis titles "
    "say how much of the differences each direction keeps. Dots close together are words the model sees "
    "alike at that layer. Move the **depth** slider: at depth 0 (the token table) every *apple* is the same "
    "dot; deeper in the model the context moves them apart, fruit to one side and company to the other.\n\n"
    "The chart at the bottom puts a **number** on it, for every layer of both models:\n"
    "- **Silhouette** (cosine): for each dot, how much closer it is to its own group than to the nearest "
    "other group, averaged. 1 = groups perfectly apart, 0 = groups overlap, below 0 = mixed up.\n"
    "- **Nearest-centroid accuracy** (leave-one-out): hide one dot, average each group's remaining dots, and "
    "guess the hidden dot's group as the nearest average (vectors scaled to length 1 first, so direction "
    "counts, not size). The share of correct guesses: 1 = always right; guessing blindly gives about "
    "1 ÷ number of groups.\n\n"
    "Both are computed with scikit-learn on the full vectors (their lengths and angles), not on the 2-D "
    "picture. With a dozen sentences they describe *these* sentences, not the model in general."
)

st.subheader("Sentences")
items_text = ui.text_input(
    f"One sentence per line, as **group: sentence** (2 groups or more, 2 sentences or more each, "
    f"{MAX_ITEMS} at most). Put [square brackets] around the word to map.",
    key="maps_items", default=PRESETS["apple: 6 fruit, 6 company"], area=True, height=220)
ui.preset_buttons(PRESETS, "maps_items")
left, right = st.columns(2)
with left:
    default_word = ui.text_input("Word to map in lines without [brackets] (optional)", key="maps_word")
with right:
    pooling = ui.selectbox("A word cut into several tokens is represented by", list(POOLING), key="maps_pooling",
                           format_func=POOLING.get,
                           help="Average: every piece counts. Last token: in these models a token only sees the "
                                "text to its left, so the word's last piece is the first place that has read "
                                "the whole word.")

try:
    items = parse_items(items_text, default_word)
except ValueError as error:
    st.error(str(error))
    st.stop()

depth = ui.slider("Depth in the model (0 = token table, 1 = last layer)", key="maps_depth", default=0.5,
                  min_value=0.0, max_value=1.0, step=0.05,
                  help="Relative depth = layer ÷ number of layers, so models of different depth line up: "
                       "0.5 is layer 15 of SmolLM2's 30 and layer 9 of Gemma 3 270M's 18.")
settings = {"depth": depth, "word vector": POOLING[pooling]}
plain_items = tuple((i.group, i.sentence, i.word, i.start, i.end) for i in items)
results = {}  # model title -> maps, for the separation chart and the token tables below


def one_model(slot) -> None:
    maps = maps_for(slot.key, plain_items, pooling)  # a remote model: every sentence in one job
    results[slot.title] = (slot.label, maps)
    truncation_notes(slot, [item.sentence for item in items])
    layer = layer_at_depth(depth, slot.lm.num_layers)
    points = maps.points[maps.points["layer"] == layer]
    scores = maps.separation.iloc[layer]
    a, b = st.columns(2)
    a.metric("Silhouette (cosine)", f"{scores['silhouette']:.3f}", help="1 = groups apart, 0 = overlapping")
    b.metric("Nearest-centroid accuracy", "—" if pd.isna(scores["probe_accuracy"]) else f"{scores['probe_accuracy']:.0%}",
             help="Leave-one-out; '—' when every dot is the same (nothing to tell apart)")
    what = "the token table" if layer == 0 else f"layer {layer} of {slot.lm.num_layers}"
    export.show_chart(map_chart(points, f"{what} (depth {layer / slot.lm.num_layers:.2f})"),
                      f"hidden_state_map_{slot.label}_chart", table=points,
                      settings={**settings, "layer": layer}, width="stretch")
    if points[["x", "y"]].abs().max().max() == 0:
        st.caption("Every dot is at the same place: the word has the same vector in every sentence here.")
    st.caption("Colour and shape = group. Hover a dot for its sentence.")


ui.side_by_side(one_model, need_weights=True)

if results:
    st.subheader("How well the groups separate, layer by layer")
    long = separation_long({title: maps.separation for title, (_, maps) in results.items()})
    export.show_chart(separation_chart(long, depth), "group_separation_chart", table=long, settings=settings,
                      width="stretch")
    st.caption("Colour = model, line style = measure. The dotted line marks the depth shown in the maps above. "
               f"Guessing blindly would score about {1 / len({i.group for i in items}):.0%} accuracy.")

    with st.expander("Which tokens stand for the word in each sentence"):
        st.caption(f"The word's vector is {POOLING[pooling]} (tokens found through their character positions).")
        for column, (title, (label, maps)) in zip(st.columns(len(results)), results.items()):
            with column:
                st.markdown(f"**{title}**")
                st.dataframe(maps.pieces, hide_index=True, width="stretch",
                             column_order=["sentence", "group", "tokens", "positions"])
                ui.download_csv(maps.pieces, f"hidden_state_map_tokens_{label}.csv", "CSV of the tokens")
