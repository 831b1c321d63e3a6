"""Everything the Embeddings page shows for one model, in one go: a remote model's page is ONE job.

Why a function of its own: the page (lecture step 3) shows a query's nearest tokens, a - b + c
(3CosAdd, Mikolov et al. 2013) and a 2-D PCA map of a word list. A remote model (core.remote) pays one
queue wait per NDIF job and its table must stay where it is, so every part runs in one session on the
server's table (core.remote.embeddings.embeddings_job, reduced by core.weights.neighbour_reduce, the
local path's own functions) and only k ids and cosines per list, the expected token's rank and n x 2
map coordinates come back. The token ids and readable pieces come from the local tokenizer before the
job; a part whose input is not valid (an unknown character, too few words) is that part's message and
is not sent. A local model: nearest_tokens, arithmetic and project_words, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from core.model.loaded import LoadedModel
from core.text.tokens import display_token
from core.weights.embeddings import (MAX_K, _is_remote, _neighbour_frame, _query_ids, arithmetic, nearest_tokens,
                                     project_words, projection_frame, query_tokens, word_pairs)


@dataclass(frozen=True, eq=False)
class EmbeddingsPage:
    """One model's numbers on the Embeddings page (plain values, cacheable); a part not asked is None."""

    neighbours: pd.DataFrame | None = None  # nearest_tokens's table
    arithmetic: pd.DataFrame | None = None  # arithmetic's table
    projection: pd.DataFrame | None = None  # project_words's table
    errors: dict[str, str] = field(default_factory=dict)  # part -> why it could not be made

    def part(self, name: str) -> pd.DataFrame:
        """The part's table, or its error raised as the public function would have raised it."""
        if name in self.errors:
            raise ValueError(self.errors[name])
        return getattr(self, name)


def embeddings_page(lm: LoadedModel, query: str | int | None = None, k: int = 10,
                    sums: tuple | None = None, words: Sequence | None = None) -> EmbeddingsPage:
    """The parts asked: `query`'s k nearest tokens, `sums` = (a, b, c, expected or None)'s a - b + c with k
    rows, and the map of `words` (as project_words takes them). The same tables as nearest_tokens,
    arithmetic and project_words; a remote model computes them all in ONE job (RemoteError on failure)."""
    if not _is_remote(lm):
        asks = {"neighbours": None if query is None else lambda: nearest_tokens(lm, query, k),
                "arithmetic": None if sums is None else lambda: arithmetic(lm, *sums[:3], k, expected=sums[3]),
                "projection": None if words is None else lambda: project_words(lm, words)}
        return EmbeddingsPage(**_each(asks))
    plans = _each({"neighbours": None if query is None else lambda: _neighbours_plan(lm, query, k),
                   "arithmetic": None if sums is None else lambda: _arithmetic_plan(lm, sums, k),
                   "projection": None if words is None else lambda: _projection_plan(lm, words)})
    errors = plans.pop("errors")
    searches = [name for name in ("neighbours", "arithmetic") if plans[name] is not None]
    mapped = plans["projection"]
    if not searches and mapped is None:  # nothing valid to send: no job
        return EmbeddingsPage(errors=errors)
    from core.remote.embeddings import embeddings_job

    found, points = embeddings_job(lm, [plans[name][0] for name in searches], mapped[1] if mapped else (),
                                   label="embeddings page: " + ", ".join(searches + ["projection"] * bool(mapped)))
    tables = {name: _answer_table(lm, answer, plans[name][1]) for name, answer in zip(searches, found)}
    if mapped:
        pairs, ids = mapped
        tables["projection"] = projection_frame(pairs, [[display_token(lm, i) for i in word] for word in ids],
                                                *points)
    return EmbeddingsPage(**tables, errors=errors)


def _each(asks: dict) -> dict:
    """Each part's ask() (None when not asked), and {"errors": {part: message}} for those that raised ValueError."""
    out, errors = {}, {}
    for name, ask in asks.items():
        try:
            out[name] = None if ask is None else ask()
        except ValueError as problem:
            out[name], errors[name] = None, str(problem)
    return {**out, "errors": errors}


def _neighbours_plan(lm: LoadedModel, query, k: int) -> tuple[tuple, dict]:
    """The search sent for nearest_tokens (terms, k, exclude, expected) and its table's attrs."""
    token_ids, pieces = query_tokens(lm, query)
    k = max(1, min(int(k), MAX_K, lm.parts.embed.weight.shape[0]))
    return ([token_ids], k, (), None), {"query_ids": token_ids, "query_pieces": pieces}


def _arithmetic_plan(lm: LoadedModel, sums: tuple, k: int) -> tuple[tuple, dict]:
    """The search sent for arithmetic(a, b, c, k, expected) and its table's attrs (the rank filled in later)."""
    words, expected = tuple(sums[:3]), sums[3]
    terms = [_query_ids(lm, word) for word in words]
    exclude = {i for ids in terms for i in ids}
    wanted = _query_ids(lm, expected) if expected is not None and str(expected).strip() else None
    k = max(1, min(int(k), MAX_K, lm.parts.embed.weight.shape[0] - len(exclude)))
    attrs = {"pieces": {str(word): [display_token(lm, i) for i in ids] for word, ids in zip(words, terms)}}
    if wanted is not None:
        attrs.update(expected_pieces=[display_token(lm, i) for i in wanted], expected_rank=None)
    return (terms, k, exclude, wanted[0] if wanted and len(wanted) == 1 else None), attrs


def _projection_plan(lm: LoadedModel, words: Sequence) -> tuple[list[tuple[str, str]], list[list[int]]]:
    """project_words's (group, word) pairs and each word's token ids."""
    pairs = word_pairs(list(words))
    return pairs, [_query_ids(lm, word) for _, word in pairs]


def _answer_table(lm: LoadedModel, answer: tuple, attrs: dict) -> pd.DataFrame:
    """A search's (ids, cosines, rank) as nearest_tokens / arithmetic give it."""
    ids, cosines, rank = answer
    table = _neighbour_frame(lm, ids, cosines)
    table.attrs.update(attrs)
    if "expected_rank" in attrs:
        table.attrs["expected_rank"] = rank
    return table
