"""What each block writes: the residual stream taken apart (direct logit attribution, Elhage et al. 2021),
and the explainer's point in numbers: attention exchanges information between tokens, the MLP works alone."""

import pandas as pd
import streamlit as st

import cause_ui
import export
import ui
from charts.cause import block_label, depth_heatmap, logit_waterfall, reads_chart, token_effect_bars

PREFIX = "bw"
PRESETS = {
    "The capital of France is": {f"{PREFIX}_prompt": "The capital of France is", f"{PREFIX}_target": " Paris"},
    "Green apple (lecture)": {f"{PREFIX}_prompt": "the apple is green. what color is the apple?",
                              f"{PREFIX}_target": " green"},
    "今天天氣真": {f"{PREFIX}_prompt": "今天天氣真", f"{PREFIX}_target": ""},
}
READ_PRESETS = {
    "green → red apple": {f"{PREFIX}_original": "The apple is green. What color is the apple?",
                          f"{PREFIX}_changed": "The apple is red. What color is the apple?"},
    "cat → dog": {f"{PREFIX}_original": "The cat sat on the mat. The animal on the mat is a",
                  f"{PREFIX}_changed": "The dog sat on the mat. The animal on the mat is a"},
}

st.title("What each block writes")
st.markdown(
    "A transformer keeps one vector per token, the **residual stream**, and every block *adds* to it: first the "
    "token embedding, then in each layer the **attention** (which mixes in information from the other tokens) "
    "and the **MLP** (which transforms each token's vector on its own). At the end the last token's vector is "
    "turned into a score (a logit) for every possible next token. Because the stream is a sum, the final score "
    "of one token can be split into one part per block: this page shows how big each block's write is, how "
    "much each block pushes the answer up or down, and which tokens it pushes."
)
ui.preset_row(PRESETS, PREFIX)
columns = st.columns([3, 2])
with columns[0]:
    prompt = ui.text_input("Prompt", key=f"{PREFIX}_prompt", default="The capital of France is")
with columns[1]:
    target = ui.text_input("Answer token to explain (optional; empty = each model's own top next token)",
                           key=f"{PREFIX}_target", default=" Paris",
                           help="A leading space matters (' Paris'). A longer text means its first token.")
if not prompt.strip():
    st.warning("Type a prompt, or click a preset.")
    st.stop()
target_arg = cause_ui.optional(target)


asked = cause_ui.Asked()  # a remote model's numbers are one job per analysis; a failed one is sent once per run
K_KEY, K_RANGE = f"{PREFIX}_k", (1, 30)
shown_k = cause_ui.pending_number(K_KEY, 10, *K_RANGE)  # read here: a remote model's token lists come with its contributions
DEMO_DEFAULT = READ_PRESETS["green → red apple"]
# and the demonstration's prompts, drawn at the bottom: a remote model runs the whole page as one job
demo = tuple(str(ui.bound_value(f"{PREFIX}_{name}", DEMO_DEFAULT[f"{PREFIX}_{name}"])) for name in ("original", "changed"))


def remote_page(slot) -> tuple:
    """(contributions, token effects, the demonstration's table or its error) of a remote model: one job."""
    return asked(cause_ui.blocks_remote, slot.key, prompt, target_arg, shown_k, *demo)


def contributions_for(slot) -> pd.DataFrame:
    if cause_ui.is_remote(slot):
        return remote_page(slot)[0]
    return asked(cause_ui.contributions, slot.key, prompt, target_arg)


def token_effects_for(slot, k: int) -> pd.DataFrame:
    if cause_ui.is_remote(slot):
        return remote_page(slot)[1]
    return asked(cause_ui.token_effects, slot.key, prompt, k)


def last_position(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["position"] == table["position"].max()].reset_index(drop=True)


# ---------------------------------------------------------------- sizes
st.header("How much each block writes, at every token")
st.markdown("Each cell is the **size** (length of the vector) of what that block adds to that token's residual "
            "stream. **Bright = a large write.** Attention and MLP are drawn separately, layers going up on "
            "relative depth so both models line up. The first token often gets huge writes that carry no meaning "
            "(an 'attention sink'); the log colour scale keeps the other cells readable.")
log_scale = st.toggle("Log colour scale", value=True, key=f"{PREFIX}_log")


def sizes(slot) -> None:
    table = contributions_for(slot)
    for block, title in (("attn", "Attention"), ("mlp", "MLP")):
        part = table[table["block"] == block]
        st.markdown(f"**{title}: size of the write**")
        export.show_chart(depth_heatmap(part, slot.lm.num_layers, "norm", f"{title} write size (L2 norm)",
                                        diverging=False, log=log_scale, layer_title="Block"),
                          f"block_write_sizes_{block}_{slot.label}", table=part,
                          settings={"log colour scale": log_scale}, width="stretch")
    ui.download_csv(table, f"block_contributions_{slot.label}.csv", "CSV of every block, token and effect",
                    key=f"csv-bw-{slot.label}")


ui.side_by_side(sizes, need_weights=True)

# ---------------------------------------------------------------- direct effect on the logit
st.header("Each block's direct effect on the answer")
st.markdown("At the last token, each block's write is carried straight to the output and scored for the answer "
            "token: its **direct effect on the answer's logit** (direct logit attribution). Bars going up push "
            "the answer up, bars going down push it down; the bars are stacked as a running sum, which ends at "
            "the model's own logit for the answer (the dashed line). **The final normalisation's scale is frozen "
            "at its value in the real run**, which makes the last step a straight line so the parts add up. "
            "*Direct* means: only through the stream, not through what later blocks do with the write.")


def effects(slot) -> None:
    table = contributions_for(slot)
    attrs = table.attrs
    last = last_position(table)
    total = float(last["logit_effect"].sum())
    st.caption(f"Answer {attrs['target']!r}: the model's logit is {attrs['logit']:.3f}; the block effects sum to "
               f"{total:.3f}.")
    cause_ui.notes(attrs)
    export.show_chart(logit_waterfall(last, attrs["logit"]), f"block_logit_effects_{slot.label}",
                      table=last[["layer", "block", "logit_effect"]], settings={"answer": attrs["target"]},
                      width="stretch")
    top = last.reindex(last["logit_effect"].abs().sort_values(ascending=False).index).head(5)
    st.caption("Largest effects: " + "; ".join(f"{block_label(r.layer, r.block)} {r.logit_effect:+.2f}"
                                                for r in top.itertuples()))


ui.side_by_side(effects, need_weights=True)

# ---------------------------------------------------------------- promoted and suppressed tokens
st.header("Which tokens a block pushes up and down")
st.markdown("The same direct effect, computed for **every** token of the vocabulary: the tokens whose score one "
            "block's write (at the last token) raises most, and those it lowers most. Pick a block; the default is "
            "the block with the largest effect on the answer above.")
k = ui.number_input("Tokens in each list", key=K_KEY, default=10, min_value=K_RANGE[0], max_value=K_RANGE[1])


def token_effects(slot) -> None:
    last = last_position(contributions_for(slot))
    last = last[last["block"] != "bias"]
    labels = [block_label(l, b) for l, b in zip(last["layer"], last["block"])]
    best = labels[int(last["logit_effect"].abs().to_numpy().argmax())]
    picked = ui.selectbox("Block", labels, key=f"{PREFIX}_block_{slot.label.lower()}", default=best)
    layer, block = last.iloc[labels.index(picked)][["layer", "block"]]
    table = token_effects_for(slot, k)
    part = table[(table["layer"] == layer) & (table["block"] == block)]
    export.show_chart(token_effect_bars(part), f"block_token_effects_{slot.label}", table=part,
                      settings={"block": picked, "k": k}, width="stretch")
    ui.download_csv(table, f"block_token_effects_{slot.label}.csv", "CSV of every block's lists",
                    key=f"csv-bte-{slot.label}")


ui.side_by_side(token_effects, need_weights=True)

# ---------------------------------------------------------------- the demonstration
st.header("Attention exchanges information between tokens; the MLP works on each token alone")
st.markdown(
    "Change one **earlier** word and look at the **last** token. Everything at the last token changes, because "
    "the changed word reaches it. But how? Run the changed prompt once more and, at every layer, give each "
    "sub-block at the last token **the input it had in the original run**. Then:\n"
    "- the **MLP**'s output there is exactly the original again (change 0): it reads nothing but its own token;\n"
    "- the **attention**'s output still changes: it reads the other tokens, and one of them is the changed word.\n\n"
    "The chart shows that remaining change, layer by layer. Both prompts need the same number of tokens."
)
ui.preset_row(READ_PRESETS, f"{PREFIX}_read")
columns = st.columns(2)
with columns[0]:
    original = ui.text_input("Original prompt", key=f"{PREFIX}_original", default=DEMO_DEFAULT[f"{PREFIX}_original"])
with columns[1]:
    changed = ui.text_input("The same with one earlier word changed", key=f"{PREFIX}_changed",
                            default=DEMO_DEFAULT[f"{PREFIX}_changed"])
value = ui.selectbox("Show", ["held_output_change", "output_change", "input_change"], key=f"{PREFIX}_read_value",
                     format_func={"held_output_change": "Output change with the input held (the demonstration)",
                              "output_change": "Output change", "input_change": "Input change"}.get)
if not original.strip() or not changed.strip():
    st.warning("Type both prompts, or click a preset.")
    st.stop()



def reads(slot) -> None:
    if cause_ui.is_remote(slot) and (original, changed) == demo:  # it came with the rest of the page
        table = remote_page(slot)[2]
        if isinstance(table, ValueError):
            raise table
    else:
        table = asked(cause_ui.reads, slot.key, original, changed)
    attrs = table.attrs
    held = table.groupby("block")["held_output_change"].max()
    changed_at = ", ".join(map(str, attrs["changed_positions"]))
    st.caption(f"At the last token, position {attrs['position']} {attrs['token']!r} (changed token"
               f"{'s' if len(attrs['changed_positions']) > 1 else ''} at position {changed_at}). With the input "
               f"held: largest MLP output change {held.get('mlp', float('nan')):.3g}, largest attention output "
               f"change {held.get('attn', float('nan')):.3g}.")
    export.show_chart(reads_chart(table, slot.lm.num_layers, value), f"what_blocks_read_{slot.label}", table=table,
                      settings={"show": value}, width="stretch")


ui.side_by_side(reads, need_weights=True)
