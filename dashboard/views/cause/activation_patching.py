"""Activation patching (Meng et al. 2022; Heimersheim & Nanda 2024): where in the model does the answer live?"""

import pandas as pd
import streamlit as st

import cause_ui
import export
import ui
from charts.cause import agreement_scatter, patching_heatmap
from core import patching_agreement
from core.cause.patching import SITE_NAMES, SITES

PREFIX = "ap"
KEYS = {"clean": f"{PREFIX}_clean", "corrupted": f"{PREFIX}_corrupted", "answer": f"{PREFIX}_answer",
        "foil": f"{PREFIX}_foil"}


def preset(clean: str, corrupted: str, answer: str, foil: str) -> dict[str, str]:
    return dict(zip(KEYS.values(), (clean, corrupted, answer, foil)))


PRESETS = {
    "France vs Italy (a fact)": preset("The capital of France is", "The capital of Italy is", " Paris", " Rome"),
    "Green vs red apple (lecture)": preset("the apple is green. what color is the apple?",
                                           "the apple is red. what color is the apple?", " green", " red"),
    "法国 vs 日本 (Chinese)": preset("法国的首都是", "日本的首都是", "巴黎", "东京"),
}
DEFAULT = PRESETS["France vs Italy (a fact)"]
SITE_CHOICES = {"resid": "Residual stream", "attn": "Attention output", "mlp": "MLP output",
                "all": "All three"}
METHOD_CHOICES = {"exact": "Exact (one run per cell)", "attribution": "Attribution (gradient estimate, fast)",
                  "both": "Both, and how well they agree"}

st.title("Activation patching: where does the answer live?")
st.markdown(
    "Two prompts differ in one word: the **clean** one (\"The capital of France is\" → Paris) and the "
    "**corrupted** one (\"… of Italy is\" → Rome). We run the corrupted prompt, but at **one layer and one "
    "token** we put back the value that the clean prompt had there, and watch the answer. The score is "
    "how far that single repair moves the model back to the clean answer, measured on the difference "
    "*logit(answer) − logit(foil)* of the next token:\n"
    "- **0** = nothing changed (still the corrupted run), **1** = the clean answer fully restored.\n"
    "- **A bright orange cell** means: the information that decides the answer passes through this "
    "token at this layer. White = it does not; blue = the patch pushes further towards the foil.\n\n"
    "The **residual stream** is everything the model knows about a token at that layer (layer l = the input "
    "of block l; 0 = the token embeddings). The **attention** and **MLP** outputs are what block l's two "
    "parts add to it. Typically the answer first sits at the changed word and then moves to the last token."
)
ui.preset_row(PRESETS, PREFIX, "Presets (the Chinese pair has the same number of tokens in both embedded "
                                     "models; 意大利 instead of 日本 would not, in SmolLM2)")
left, right = st.columns(2)
with left:
    clean = ui.text_input("Clean prompt", key=KEYS["clean"], default=DEFAULT[KEYS["clean"]])
    answer = ui.text_input("Answer (optional; empty = the clean run's own top next token)", key=KEYS["answer"],
                           default=DEFAULT[KEYS["answer"]],
                           help="A leading space matters: ' Paris' is the token that follows 'is'. A longer text "
                                "means its first token (the page says which).")
with right:
    corrupted = ui.text_input("Corrupted prompt (the same number of tokens)", key=KEYS["corrupted"],
                              default=DEFAULT[KEYS["corrupted"]])
    foil = ui.text_input("Foil (optional; empty = the corrupted run's own top next token)", key=KEYS["foil"],
                         default=DEFAULT[KEYS["foil"]])
options = st.columns(2)
with options[0]:
    site_choice = ui.selectbox("Where to patch", list(SITE_CHOICES), key=f"{PREFIX}_site",
                               format_func=SITE_CHOICES.get)
with options[1]:
    method_choice = ui.selectbox("Method", list(METHOD_CHOICES), key=f"{PREFIX}_method",
                                 format_func=METHOD_CHOICES.get,
                                 help="Exact: one forward pass per cell (batched). Attribution: a first-order "
                                      "estimate of the whole grid from two forward passes and one backward pass "
                                      "(Nanda 2023; Syed et al. 2023); fast on big models, rougher.")
st.caption("Both prompts must have the same number of tokens in a model: each token of the clean run is put into "
           "the same position of the corrupted run. Where they differ the page **refuses** (it does not line them "
           "up from the end) and says so for that model; the other model still shows.")
if not clean.strip() or not corrupted.strip():
    st.warning("Type a clean and a corrupted prompt, or click a preset.")
    st.stop()
sites = list(SITES) if site_choice == "all" else [site_choice]
methods = ["exact", "attribution"] if method_choice == "both" else [method_choice]


answer_arg, foil_arg = cause_ui.optional(answer), cause_ui.optional(foil)
asked = cause_ui.Asked()  # a remote model's grid is one job; a failed one is sent once per run
agreement = []  # per model and site: exact vs attribution, cell by cell
agreement_r = []  # per model and site: Pearson r of those cells


def summary(slot, table: pd.DataFrame) -> None:
    attrs = table.attrs
    differing = ", ".join(f"{p} ({table['token'].iloc[p]!r} → {table['corrupted_token'].iloc[p]!r})"
                          for p in attrs["differing_positions"])
    st.caption(f"Answer {attrs['answer']!r} vs foil {attrs['foil']!r}: logit difference {attrs['m_clean']:.2f} in "
               f"the clean run, {attrs['m_corrupted']:.2f} in the corrupted run. Tokens that differ: {differing}.")
    cause_ui.notes(attrs)


def table_for(slot, site: str, method: str) -> pd.DataFrame:
    if cause_ui.is_remote(slot):  # every site shown, in one job per method
        return asked(cause_ui.patching_remote, slot.key, clean, corrupted, answer_arg, foil_arg, tuple(sites),
                     method)[site]
    return asked(cause_ui.patching, slot.key, clean, corrupted, answer_arg, foil_arg, site, method)


def render(slot, site: str) -> None:
    tables = {method: table_for(slot, site, method) for method in methods}
    summary(slot, next(iter(tables.values())))
    for method, table in tables.items():
        if len(tables) > 1:
            st.markdown(f"**{METHOD_CHOICES[method].split(' (')[0]}**")
        name = f"patching_{site}_{method}_{slot.label}"
        export.show_chart(patching_heatmap(table, slot.lm.num_layers, SITE_NAMES[site]), name, table=table,
                          settings={"site": site, "method": method, "answer": table.attrs["answer"],
                                    "foil": table.attrs["foil"]}, width="stretch")
    if len(tables) > 1:
        exact, estimate = tables["exact"], tables["attribution"]
        r = patching_agreement(exact, estimate)
        st.metric("How well attribution tracks exact patching (Pearson r)", "n/a" if r != r else f"{r:.2f}",
                  help="1 = the estimate ranks and scales the cells like the exact grid; 0 = unrelated.")
        agreement.append(exact[["layer", "position", "token"]].assign(
            model=slot.title, site=SITE_NAMES[site], exact=exact["score"], attribution=estimate["score"].values))
        agreement_r.append({"model": slot.title, "site": SITE_NAMES[site], "r": r, "cells": len(exact)})


for site in sites:
    st.header(f"Patching the {SITE_NAMES[site]}")
    ui.side_by_side(lambda slot, site=site: render(slot, site), need_weights=True)

if agreement:
    st.header("How well attribution patching tracks exact patching")
    st.markdown("Each point is one cell of a grid above: its exact score across, the gradient estimate up. On the "
                "dashed diagonal the estimate is exact. The estimate is a straight-line guess from the corrupted "
                "run, so it is good for small effects and can miss large, saturated ones (often the residual "
                "stream at the changed word in the first layers).")
    table = pd.concat(agreement, ignore_index=True)
    export.show_chart(agreement_scatter(table), "patching_agreement", table=table, width="stretch")
    summary_table = pd.DataFrame(agreement_r)
    st.dataframe(summary_table, hide_index=True, column_config={"r": st.column_config.NumberColumn(
        "Pearson r", format="%.3f"), "cells": "cells"})
    ui.download_csv(summary_table, "patching_agreement_r.csv", "CSV of r per model and site")
