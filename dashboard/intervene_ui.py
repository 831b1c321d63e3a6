"""Inputs and outputs shared by the Intervene pages (next token, generation, Patchscopes, steering).

- `chat_toggle`: the chat-template switch of one model. On by default for models whose
  tokenizer has a template (instruct models), off and disabled for base models.
- `model_text`: the exact text a model is given (template and special tokens included).
- `generation_settings`: greedy or sampled, temperature, top-p, seed, number of new tokens.
- `stream_generation`: runs core.intervene.generation's `generate` with tokens drawn as they come (st.empty updated from
  on_token) and keeps the result in the session, so it survives reruns and a Stop.

A Stop is any click while a generation runs: Streamlit then raises inside the running script at its
next st.* call (inside on_token), which unwinds generate: its hooks are removed and the model's lock
released (core/model/hooks.py). The text so far is already in the session and is shown as stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import streamlit as st

import ui
from core.text.chat import has_chat_template, prompt_ids
from core.intervene.generation import MAX_PROMPT_TOKENS, Steer, generate


# ---------------------------------------------------------------- chat template


def chat_toggle(slot: ui.Slot, prefix: str) -> bool:
    """The chat-template toggle for one model; URL-bound as `<prefix>_chat_<a|b>`."""
    if slot.lm is None or not has_chat_template(slot.lm):
        st.toggle("Chat template", value=False, disabled=True, key=f"{prefix}_nochat_{slot.label}",
                  help="This model's tokenizer has no chat template (a base model): the prompt is used as typed.")
        return False
    key = f"{prefix}_chat_{slot.label.lower()}"
    if key not in st.session_state:
        st.session_state[key] = st.query_params.get(key, "1") != "0"
    on = st.toggle("Chat template", key=key,
                   help="Instruct models were trained on conversations. On: the prompt is sent as a user "
                        "message in the model's own chat format, and the model writes the assistant's answer.")
    ui.remember_in_url(key, "1" if on else "0")
    return on


def model_text(slot: ui.Slot, prompt: str, chat: bool) -> None:
    """An expander with exactly what the model reads: the decoded token ids, special tokens included."""
    ids = prompt_ids(slot.lm, prompt, chat)
    if len(ids) > MAX_PROMPT_TOKENS:
        st.warning(f"The prompt is {len(ids):,} tokens for this model; "
                   + (f"only the first {MAX_PROMPT_TOKENS} are run." if not chat else
                      f"with the chat template at most {MAX_PROMPT_TOKENS} can be run: shorten it."),
                   icon=":material/content_cut:")
    with st.expander(f"Exact text the model sees ({len(ids)} tokens)", expanded=chat):
        st.code(slot.lm.tokenizer.decode(ids, skip_special_tokens=False), language=None, wrap_lines=True)


# ---------------------------------------------------------------- generation settings


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float  # 0 = greedy
    top_p: float
    seed: int

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def describe(self) -> str:
        if not self.sampled:
            return f"greedy (always the most likely token), up to {self.max_new_tokens} new tokens"
        return (f"sampled at temperature {self.temperature:g}, top-p {self.top_p:g}, seed {self.seed}, "
                f"up to {self.max_new_tokens} new tokens")


def generation_settings(prefix: str, default_tokens: int = 20) -> GenerationSettings:
    """Greedy / sampled and its settings, all URL-bound under `prefix`."""
    mode = ui.selectbox("Decoding", ["greedy", "sampled"], key=f"{prefix}_mode",
                        format_func={"greedy": "Greedy: always the most likely token",
                                     "sampled": "Sampled: draw each token at random"}.get)
    columns = st.columns(4)
    with columns[0]:
        tokens = ui.number_input("New tokens", key=f"{prefix}_tokens", default=default_tokens, min_value=1,
                                 max_value=200)
    if mode == "greedy":
        return GenerationSettings(tokens, 0.0, 1.0, 0)
    with columns[1]:
        temperature = ui.slider("Temperature", f"{prefix}_temp", 0.8, 0.05, 2.0, 0.05,
                                   help="Divides the scores before the softmax: below 1 sharper, above 1 flatter.")
    with columns[2]:
        top_p = ui.slider("Top-p", f"{prefix}_top_p", 0.95, 0.05, 1.0, 0.05,
                             help="Draw only among the most likely tokens that together hold this much "
                                  "probability (1 = all tokens).")
    with columns[3]:
        seed = ui.number_input("Seed", key=f"{prefix}_seed", default=0, min_value=0, max_value=2**31 - 1,
                               help="The same seed and settings give the same text again (on the same device).")
    return GenerationSettings(tokens, temperature, top_p, seed)


# ---------------------------------------------------------------- streaming


def _record_key(prefix: str, slot: ui.Slot) -> str:
    return f"_{prefix}_generation_{slot.label}"


def clear_generations(prefix: str) -> None:
    """Forget this page's last generations (a new click starts both models afresh)."""
    for label in ("A", "B"):
        st.session_state.pop(f"_{prefix}_generation_{label}", None)


def stream_generation(slot: ui.Slot, prefix: str, prompt: str, chat: bool, settings: GenerationSettings,
                      steer: Steer | None = None) -> None:
    """Generate for one model, drawing the text as each token arrives; the result stays in the session."""
    record = {"source": slot.key.source, "prompt": prompt, "chat": chat, "settings": asdict(settings),
              "text": "", "tokens": 0, "done": False, "seconds": None}
    st.session_state[_record_key(prefix, slot)] = record
    box = st.empty()
    box.info("Generating…")

    def on_token(token_id: int, text: str) -> None:
        record["text"], record["tokens"] = text, record["tokens"] + 1
        box.code(text + " ▌", language=None, wrap_lines=True)  # a Stop click raises here (the next st.* call)

    result = generate(slot.lm, prompt, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                      top_p=settings.top_p, seed=settings.seed, chat=chat, steer=steer, on_token=on_token)
    record.update(text=result.text, tokens=len(result.token_ids), done=True, seconds=result.seconds,
                  finished=result.finished)
    box.empty()
    show_generation(slot, prefix, prompt, chat, settings)


def show_generation(slot: ui.Slot, prefix: str, prompt: str, chat: bool, settings: GenerationSettings) -> None:
    """The last generation of this model on this page, with the settings that reproduce it."""
    record = st.session_state.get(_record_key(prefix, slot))
    if record is None or record["source"] != slot.key.source:
        st.caption("Click **Generate** to continue the prompt.")
        return
    if record["text"]:
        st.code(record["text"], language=None, wrap_lines=True)
    else:
        st.caption("(no text: the model ended at once)")
    made = GenerationSettings(**record["settings"])
    if not record["done"]:
        st.warning(f"Stopped after {_count(record['tokens'])}.", icon=":material/stop_circle:")
    else:
        ending = ("reached the token limit" if record.get("finished") == "length"
                  else "the model ended its answer")
        st.caption(f"{_count(record['tokens'])} in {record['seconds']:.1f} s ({ending}).")
    st.caption(f"Made with: {made.describe()}; chat template {'on' if record['chat'] else 'off'}.")
    if (record["prompt"], record["chat"], made) != (prompt, chat, settings):
        st.caption("The prompt or settings above have changed since: click **Generate** for a new continuation.")



def _count(tokens: int) -> str:
    return f"{tokens} token" if tokens == 1 else f"{tokens} tokens"


# ---------------------------------------------------------------- steering: unsteered and steered side by side


def steered_side_by_side(slot: ui.Slot, prefixes: tuple[str, str], titles: tuple[str, str], prompt: str, chat: bool,
                         settings: GenerationSettings, steer: Steer, run: bool) -> None:
    """The unsteered and the steered continuation of `prompt` in two columns; `run`: generate them now.

    A model here streams each in turn. A remote model makes both in ONE job
    (core.intervene.steering.with_and_without), so both arrive whole, at once.
    """
    made = (None, None)
    if ui.remote_of(slot.lm) is not None:
        st.caption("This model runs remotely: both continuations are made in one job and arrive whole.")
    if run and ui.remote_of(slot.lm) is not None:
        from core.intervene.steering import with_and_without

        with st.spinner("Waiting for the remote model: both continuations are made in one job…"):
            made = with_and_without(slot.lm, prompt, steer, max_new_tokens=settings.max_new_tokens, chat=chat)
    for box, prefix, title, edit, generation in zip(st.columns(2), prefixes, titles, (None, steer), made):
        with box:
            st.markdown(f"**{title}**")
            if generation is not None:
                _keep(slot, prefix, prompt, chat, settings, generation)
                show_generation(slot, prefix, prompt, chat, settings)
            elif run:
                stream_generation(slot, prefix, prompt, chat, settings, steer=edit)
            else:
                show_generation(slot, prefix, prompt, chat, settings)


def _keep(slot: ui.Slot, prefix: str, prompt: str, chat: bool, settings: GenerationSettings, generation) -> None:
    """A finished Generation kept as stream_generation keeps its result (show_generation reads it)."""
    st.session_state[_record_key(prefix, slot)] = {
        "source": slot.key.source, "prompt": prompt, "chat": chat, "settings": asdict(settings),
        "text": generation.text, "tokens": len(generation.token_ids), "done": True, "seconds": generation.seconds,
        "finished": generation.finished}
