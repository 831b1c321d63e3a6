"""Everything the hidden-states page shows for one model, in one go: a remote model's page is ONE job.

Why a function of its own: the page shows, of one prompt, how many entries there are and their
shapes, every token's vector length at every entry (hidden_state_facts) and the picked token's whole
vector at every entry; and the "how you" demo (word_vectors_across). A remote model (core.remote)
pays one queue wait per NDIF job and must not send whole traces back, so the prompt and the demo's
sentences run in one session (core.remote.context.context_job) and only those numbers come back:
for Llama-3.1-405B on the lecture's 12-token prompt, lengths (127, 12) and the column (127, 16,384)
in float32 (~8.3 MB), plus the demo's word vectors (~41.6 MB). Locally the same reduction
(core.running.context_reduce.prompt_reduce) reads the cached Trace.

The prompt's tokens come from the local tokenizer (core.running.lens_page.prompt_tokens), so the
alignment picker and the picked position are known before any job is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.running.context import (_as_tokens, _ids, _is_remote, asked_vectors, facts_table, vector_table,
                                  word_plans, word_vectors)
from core.running.context_reduce import prompt_reduce
from core.running.lens_page import PromptTokens, prompt_tokens, tokens_of
from core.running.trace import Trace, run_trace


@dataclass(frozen=True, eq=False)
class HiddenPage:
    """One model's numbers on the hidden-states page (plain values, cacheable)."""

    tokens: PromptTokens  # the prompt as this model cuts it
    hidden_size: int  # numbers per vector (H)
    norms: np.ndarray  # (L+1, T) float32: each token's vector length at each entry
    position: int | None  # the picked token (None: no token picked)
    column: np.ndarray | None  # (L+1, H) float32: the picked token's vector at each entry
    demo: pd.DataFrame | None = None  # word_vectors_across's table (None: no demo asked, or demo_error)
    demo_error: str | None = None  # why the demo could not be made (a word in no sentence)

    @property
    def entries(self) -> int:
        return self.norms.shape[0]

    def facts(self) -> pd.DataFrame:
        """hidden_state_facts of the prompt."""
        return facts_table(self.norms, self.hidden_size)

    def vector(self, layer: int) -> np.ndarray:
        """The picked token's whole vector at entry `layer`."""
        if not 0 <= layer < self.entries:
            raise ValueError(f"Layer {layer} does not exist: this model has entries 0 to {self.entries - 1}.")
        return self.column[layer]  # (H,)


def hidden_page(lm: LoadedModel, prompt: str | Trace, position: int | None, sentences: Sequence[str | Trace] = (),
                words: Sequence[str] = (), n_values: int = 3) -> HiddenPage:
    """The page's numbers for `prompt` at the picked `position`, and the demo of `words` across `sentences`.

    No demo is made when fewer than two sentences or no words are given. A remote model runs the
    prompt and every sentence in one job (RemoteError on failure); a local model reads `prompt`'s Trace
    (run here when given as text) and word_vectors_across's numbers.
    """
    remote = _is_remote(lm)
    trace = None if remote or isinstance(prompt, Trace) else run_trace(lm, prompt)
    tokens = prompt_tokens(lm, prompt) if isinstance(prompt, str) and remote else tokens_of(trace or prompt)
    if position is not None and not 0 <= position < len(tokens.tokens):
        raise ValueError(f"Token position {position} does not exist: the prompt has {len(tokens.tokens)} tokens.")
    plans, error, traces = None, None, []
    if len(sentences) >= 2 and words:
        traces = _as_tokens(lm, sentences)
        try:
            plans = word_plans(traces, words)
        except ValueError as problem:
            error = str(problem)
    if remote:
        from core.remote.context import context_job

        shown, stacks = context_job(lm, _ids(traces) if plans else [], "hidden states",
                                    vectors=asked_vectors(plans) if plans else None,
                                    prompt=([int(i) for i in tokens.token_ids], position))
        per_word = [[stack[:, k] for k in range(stack.shape[1])] for stack in stacks] if plans else None
    else:
        trace = trace or prompt
        states = torch.tensor(trace.hidden_states)  # (L+1, T, H), a copy: the Trace's arrays are read-only
        shown = {name: value.numpy() for name, value in prompt_reduce(states, position).items()}
        per_word = [[word_vectors(t, p) for _, t, p in found] for found in plans] if plans else None
    demo = vector_table(words, plans, per_word, n_values) if plans else None
    return HiddenPage(tokens, lm.parts.layout.hidden_size, shown["norms"], position, shown.get("column"), demo, error)
