"""Everything the logit lens page shows for one model: its tokens, the grid and a trajectory, in one go.

Why a function of its own: a remote model (core.remote) pays one queue wait per NDIF job, so the
page's grid (logit_lens) and its trajectory (token_trajectory) go to the model in ONE job
(core.remote.lens.lens_job with both requests), from the prompt's token ids; locally they are read
from one Trace (run_trace), with exactly the numbers logit_lens and token_trajectory give.

What the page needs besides the numbers is the prompt cut into tokens (readable text, character
offsets for the alignment picker, whether the token limit cut it). That comes from the local
tokenizer (core.text.tokens.encode, as run_trace does it), so a remote model's tokens are known
before, and without, any job: `prompt_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.model.loaded import LoadedModel
from core.remote.lens import lens_job, prompt_ids
from core.running.lens import (_is_remote, _trace, checked_position, followed_token, head_options, logit_lens,
                               remote_grid, token_trajectory)
from core.running.lens_table import grid_table, trajectory_table
from core.running.trace import MAX_TRACE_TOKENS, Trace
from core.text.tokens import display_token, encode


@dataclass(frozen=True, eq=False)
class PromptTokens:
    """The prompt as one model cuts it, without hidden states (the fields of a Trace the page reads)."""

    prompt: str
    token_ids: np.ndarray  # (T,) int64, BOS included, cut at MAX_TRACE_TOKENS
    tokens: tuple[str, ...]  # readable text of each token
    offsets: np.ndarray  # (T, 2) character span of each token; (0, 0) for BOS
    truncated: bool  # the prompt had more than MAX_TRACE_TOKENS tokens
    total_tokens: int | None = None  # tokens of the whole prompt


def prompt_tokens(lm: LoadedModel, prompt: str) -> PromptTokens:
    """The tokens run_trace would run for `prompt`, from the local tokenizer alone (no forward pass, no job)."""
    ids = prompt_ids(lm, prompt)  # also refuses an empty prompt, as run_trace does
    _, offsets = encode(lm, prompt)
    total = len(offsets)
    return PromptTokens(prompt, np.asarray(ids, dtype=np.int64), tuple(display_token(lm, i) for i in ids),
                        np.asarray(offsets[:MAX_TRACE_TOKENS], dtype=np.int64).reshape(-1, 2),
                        total > MAX_TRACE_TOKENS, total)


def tokens_of(trace: Trace) -> PromptTokens:
    """A Trace's tokens (no copy of its arrays)."""
    return PromptTokens(trace.prompt, trace.token_ids, trace.tokens, trace.offsets, trace.truncated,
                        trace.total_tokens)


@dataclass(frozen=True)
class Follow:
    """Which token the trajectory follows, and where: token_trajectory's arguments as plain values.

    target: text (its first token, see core.running.lens.target_lookup), a token id, or None / ""
    for the model's own prediction; position: None for the last token.
    """

    target: str | int | None = None
    position: int | None = None
    after_space: bool = False


@dataclass(frozen=True, eq=False)
class LensPage:
    """One model's logit lens page.

    table: logit_lens's columns (layer, position, rank, token, token_id, prob), (L + 1) * T * k rows,
    or None when no grid was asked; trajectory: token_trajectory's columns, L + 1 rows, or None when
    none was asked or it could not be followed (trajectory_error says why: a word with no token).
    """

    tokens: PromptTokens
    table: pd.DataFrame | None
    trajectory: pd.DataFrame | None
    trajectory_error: str | None = None


def lens_page(lm: LoadedModel, prompt: str | Trace, *, k: int | None = 5, follow: Follow | None = None) -> LensPage:
    """The page's grid (top `k` of every layer and position; None: no grid) and the trajectory of `follow`
    (None: none), with the prompt's tokens.

    A remote model: ONE job, from the prompt's token ids (a Trace's own, if given); a target that
    cannot be followed is checked first, and the grid still comes in that job. Raises RemoteError
    (a ModelLoadError) when the job fails. Locally: from `prompt` if it is a Trace, else from one
    run_trace; the numbers are logit_lens's and token_trajectory's.
    """
    if not _is_remote(lm):
        trace = _trace(lm, prompt)
        table = logit_lens(lm, trace, k) if k is not None else None
        trajectory, problem = None, None
        if follow is not None:
            try:
                trajectory = token_trajectory(lm, trace, follow.target, follow.position, follow.after_space)
            except ValueError as error:  # the trace is made: only the target or the position can be wrong
                problem = str(error)
        return LensPage(tokens_of(trace), table, trajectory, problem)
    tokens = tokens_of(prompt) if isinstance(prompt, Trace) else prompt_tokens(lm, prompt)
    ids, entries = [int(i) for i in tokens.token_ids], lm.num_layers + 1
    grid, sizes = (None, set()) if k is None else remote_grid(lm, len(ids), max(1, min(int(k), lm.vocab_size)))
    asked, problem = None, None
    if follow is not None:
        try:
            position = checked_position(follow.position, len(ids))
            looked_up, target_id = followed_token(lm, follow.target, follow.after_space)
            asked, sizes = {"position": position, "target_id": target_id}, sizes | {entries}
        except ValueError as error:
            problem = str(error)
    if grid is None and asked is None:
        return LensPage(tokens, None, None, problem)
    result = lens_job(lm, ids, head=head_options(lm, sizes), grid=grid, trajectory=asked)
    table = grid_table(lm, len(ids), result) if grid is not None else None
    trajectory = None if asked is None else trajectory_table(lm, position, looked_up, int(result["target_id"]),
                                                             result["rank"], result["prob"])
    return LensPage(tokens, table, trajectory, problem)
