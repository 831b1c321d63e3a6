"""Neighbours in a model's input-embedding table (lecture step 3).

Each row E[i] of the embedding table (vocab, hidden) is token i's vector. The
nearest tokens to a query vector q are the rows with the highest cosine
similarity

    cos(q, E[i]) = (E[i] . q) / (|E[i]| |q|)

computed over the *whole* vocabulary. Gemma multiplies embeddings by
sqrt(hidden) in the forward pass; a constant factor does not change a cosine,
so the raw table is used for every model.

Memory: there is never a normalised copy of E (for Gemma 3 4B that would be
another 262,208 x 2,560 fp32 = 2.7 GB). The inverse row norms 1/|E[i]| — one fp32
vector of length vocab — are computed once per model, when it loads, and kept in a weak-keyed
cache beside the model (never on it: models are shared and read-only). With q
scaled to unit length first, a query is one matrix-vector product in the
table's own dtype, one multiply per token and a top-k: O(vocab) extra memory.

bf16/fp16 tables: torch's CPU matvec and row norms accumulate in fp32 but round
each output to the table's dtype, so the cosines of that pass are off by at most
~0.008. That is plenty to rank 262 k tokens but can swap near-ties, so every token
within a safety margin of the k-th score is rescored exactly in fp32, norms
included (usually a few dozen rows). Upcasting row chunks to fp32 for the full pass was measured
several times slower on CPU (bench/embeddings.py).

Arithmetic a - b + c is 3CosAdd (Mikolov et al. 2013, "Linguistic Regularities
in Continuous Space Word Representations"; Levy & Goldberg 2014): each term is
unit-normalised first so no word dominates by its norm, and the inputs are
excluded from the answer. Projections are PCA (SVD of the centred word vectors, neighbour_reduce.pca_2d).

The search itself (row_dots, top_cosine_rows, the inverse norms, the query's vector) lives in
core.weights.neighbour_reduce, torch only, so that a remote model (core.remote) runs the very same
search where its table is: nearest_tokens on such a model is one job that sends back k ids and cosines.
The page's parts together are one job too (core.weights.embeddings_page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.model.reading import embedding_table, inverse_norms
from core.text.tokens import display_token, require_tokenizer
from core.weights.neighbour_reduce import (MAX_RESCORE_ROWS, RESCORE_MARGIN, pca_2d,  # noqa: F401 (kept here)
                                          query_vector, rank_in, row_dots, three_cos_add, top_cosine_rows)

MAX_K = 200
MAX_WORDS = 60  # projection word lists
TOKEN_ID = re.compile(r"^#\s*(\d+)$")  # "#1234" means token id 1234


# ---------------------------------------------------------------- cosine over the whole vocabulary


def top_cosine(lm: LoadedModel, q: torch.Tensor, k: int, exclude=()) -> tuple[list[int], list[float]]:
    """The k tokens of the model's vocabulary most cosine-similar to the vector q (H,)."""
    return top_cosine_rows(embedding_table(lm), inverse_norms(lm), q, k, exclude)


# ---------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """What a typed query means to one model: the token ids it becomes and the vector used."""

    text: str
    token_ids: tuple[int, ...]
    pieces: tuple[str, ...]  # readable text of each token
    vector: torch.Tensor  # (H,) fp32: the token's row, or the mean of the pieces' rows

    @property
    def is_single_token(self) -> bool:
        return len(self.token_ids) == 1


def _is_remote(lm: LoadedModel) -> bool:
    """A core.remote model: its table is read where lm.remote says (NDIF or its local simulation)."""
    return getattr(lm, "remote", None) is not None


def _query_ids(lm: LoadedModel, query: str | int) -> list[int]:
    # first: "needs the weights" is the useful message; a remote model's table shape is known on meta
    vocab = lm.parts.embed.weight.shape[0] if _is_remote(lm) else embedding_table(lm).shape[0]
    tokenizer = require_tokenizer(lm)
    if isinstance(query, (int, np.integer)):
        token_id = int(query)
    elif TOKEN_ID.match(str(query).strip()):
        token_id = int(TOKEN_ID.match(str(query).strip()).group(1))
    else:
        text = str(query)
        if not text.strip():
            raise ValueError("Type a word or a token (or #1234 for token id 1234).")
        # A raw vocabulary piece such as "Ġapple" or "<bos>" is that token, whatever it would encode to.
        piece_id = tokenizer.convert_tokens_to_ids(text)
        if piece_id is not None and (piece_id != tokenizer.unk_token_id or text == tokenizer.unk_token):
            return [int(piece_id)]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{lm.name}'s tokenizer turns {text!r} into no tokens at all.")
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise ValueError(f"{text!r} contains characters {lm.name} does not know (they become <unk>).")
        return list(ids)
    if not 0 <= token_id < vocab:
        raise ValueError(f"Token id {token_id} does not exist in {lm.name}: ids run from 0 to {vocab - 1:,}.")
    return [token_id]


@torch.no_grad()
def resolve_query(lm: LoadedModel, query: str | int) -> Query:
    """A token string, a token id (int or "#1234"), or a word the tokenizer splits into pieces.

    Several pieces are averaged: the mean of their embedding rows stands for the word.
    """
    ids = _query_ids(lm, query)
    if _is_remote(lm):  # the rows are read where the table is: one job, H floats back
        from core.remote.embeddings import query_vector_job

        vector = query_vector_job(lm, ids)
    else:
        vector = query_vector(embedding_table(lm), ids)  # (H,) the mean of the pieces' rows
    return Query(str(query), tuple(ids), tuple(display_token(lm, i) for i in ids), vector)


def query_tokens(lm: LoadedModel, query: str | int) -> tuple[list[int], list[str]]:
    """The token ids a query becomes and their readable pieces, from the tokenizer alone (no table is read:
    a remote model's pieces are known before any job)."""
    ids = _query_ids(lm, query)
    return ids, [display_token(lm, i) for i in ids]


def _neighbour_frame(lm: LoadedModel, ids: list[int], cosines: list[float]) -> pd.DataFrame:
    return pd.DataFrame({
        "rank": range(1, len(ids) + 1),
        "token": [display_token(lm, i) for i in ids],
        "token_id": ids,
        "cosine": cosines,
    })


def nearest_tokens(lm: LoadedModel, query: str | int, k: int = 10) -> pd.DataFrame:
    """The k tokens whose embedding is most cosine-similar to the query's, over the whole vocabulary.

    Columns: rank (1 = best), token (readable text), token_id, cosine. A single-token query
    finds itself at rank 1. `df.attrs` holds "query_ids" and "query_pieces" (several for a
    word the tokenizer splits, whose mean vector was used).
    """
    if _is_remote(lm):  # the search runs where the table is: only k ids and cosines come back, in one job
        from core.weights.embeddings_page import embeddings_page

        return embeddings_page(lm, query=query, k=k).part("neighbours")
    resolved = resolve_query(lm, query)
    token_ids, pieces = list(resolved.token_ids), list(resolved.pieces)
    ids, cosines = top_cosine(lm, resolved.vector, min(int(k), MAX_K))
    table = _neighbour_frame(lm, ids, cosines)
    table.attrs.update(query_ids=token_ids, query_pieces=pieces)
    return table


# ---------------------------------------------------------------- arithmetic


def arithmetic(lm: LoadedModel, a: str | int, b: str | int, c: str | int, k: int = 10,
               expected: str | int | None = None) -> pd.DataFrame:
    """Nearest tokens to a - b + c (3CosAdd: each term unit-normalised), the inputs' tokens excluded.

    Same columns as `nearest_tokens`; attrs "pieces" maps each input to its readable pieces.
    With `expected` (e.g. "小" for 冷 - cold + small), attrs "expected_rank" is where that token
    lands among the whole vocabulary (1 = the answer), or None if it is not a single token.
    """
    if _is_remote(lm):  # one job where the table is: k ids, k cosines and the expected token's rank come back
        from core.weights.embeddings_page import embeddings_page

        return embeddings_page(lm, k=k, sums=(a, b, c, expected)).part("arithmetic")
    terms = [resolve_query(lm, word) for word in (a, b, c)]
    target = three_cos_add(*(t.vector for t in terms))  # (H,)
    exclude = {i for t in terms for i in t.token_ids}
    ids, cosines = top_cosine(lm, target, min(int(k), MAX_K), exclude=exclude)
    table = _neighbour_frame(lm, ids, cosines)
    table.attrs["pieces"] = {str(t.text): list(t.pieces) for t in terms}
    if expected is not None and str(expected).strip():
        wanted = resolve_query(lm, expected)
        table.attrs["expected_pieces"] = list(wanted.pieces)
        table.attrs["expected_rank"] = (rank_of(lm, target, wanted.token_ids[0], exclude)
                                        if wanted.is_single_token else None)
    return table


@torch.no_grad()
def rank_of(lm: LoadedModel, q: torch.Tensor, token_id: int, exclude=()) -> int:
    """Where `token_id` lands when the whole vocabulary is sorted by cosine to q (1 = closest)."""
    return rank_in(embedding_table(lm), inverse_norms(lm), q, token_id, exclude)


# ---------------------------------------------------------------- comparing two models' lists


def normalise_token(text: str) -> str:
    """Token text comparable across tokenizers: space markers (Ġ, ▁) and surrounding spaces dropped, case kept."""
    plain = text.replace("Ġ", " ").replace("▁", " ").strip()
    return plain or text  # a token that is only whitespace stays itself


@dataclass(frozen=True)
class Overlap:
    jaccard: float  # |A ∩ B| / |A ∪ B| of the normalised token sets
    shared: list[str]  # normalised tokens in both lists, in A's order
    table: pd.DataFrame  # token, rank_a, rank_b (best rank of that normalised token; NA if absent)


def neighbour_overlap(a: pd.DataFrame, b: pd.DataFrame) -> Overlap:
    """How much two neighbour lists (from `nearest_tokens`, any two models) agree."""

    def best_ranks(table: pd.DataFrame) -> dict[str, int]:
        ranks: dict[str, int] = {}
        for token, rank in zip(table["token"], table["rank"]):
            ranks.setdefault(normalise_token(token), int(rank))  # rows come best first
        return ranks

    ranks_a, ranks_b = best_ranks(a), best_ranks(b)
    union = list(ranks_a) + [t for t in ranks_b if t not in ranks_a]
    shared = [t for t in ranks_a if t in ranks_b]
    table = pd.DataFrame({
        "token": union,
        "rank_a": pd.array([ranks_a.get(t) for t in union], dtype="Int64"),
        "rank_b": pd.array([ranks_b.get(t) for t in union], dtype="Int64"),
    })
    table["in_both"] = table["rank_a"].notna() & table["rank_b"].notna()
    return Overlap(len(shared) / len(union) if union else 0.0, shared, table)


# ---------------------------------------------------------------- 2-D projection


def parse_word_groups(text: str) -> list[tuple[str, str]]:
    """(group, word) pairs from lines like "Fruits: apple, banana"; a line without a label is group "words".

    Words are separated by commas (or by new lines); repeated words are kept once.
    """
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        group, _, words = line.partition(":") if ":" in line else ("", "", line)
        group = group.strip() or "words"
        for word in words.split(","):
            if word.strip() and all(word.strip() != w for _, w in pairs):
                pairs.append((group, word.strip()))
    return pairs


def word_pairs(words: list[tuple[str, str]] | list[str]) -> list[tuple[str, str]]:
    """(group, word) pairs of a projection's words (a bare word is in group "words"), 3 to MAX_WORDS of them."""
    pairs = [(w if isinstance(w, tuple) else ("words", w)) for w in words]
    if len(pairs) < 3:
        raise ValueError("Give at least 3 words to draw a map.")
    if len(pairs) > MAX_WORDS:
        raise ValueError(f"At most {MAX_WORDS} words, please ({len(pairs)} given).")
    return pairs


def projection_frame(pairs: list[tuple[str, str]], pieces: list[list[str]], xy: np.ndarray,
                     explained: list[float]) -> pd.DataFrame:
    """project_words's table from the words, their readable pieces and pca_2d's coordinates (n, 2)."""
    table = pd.DataFrame({
        "word": [w for _, w in pairs],
        "group": [g for g, _ in pairs],
        "x": xy[:, 0],
        "y": xy[:, 1],
        "pieces": [" | ".join(p) for p in pieces],
        "n_pieces": [len(p) for p in pieces],
    })
    table.attrs["explained"] = [float(e) for e in explained]
    return table


@torch.no_grad()
def project_words(lm: LoadedModel, words: list[tuple[str, str]] | list[str]) -> pd.DataFrame:
    """Each word's embedding (mean of its pieces) projected onto the 2 principal components of the list.

    Columns: word, group, x, y, pieces (readable, joined by " | "), n_pieces. attrs "explained"
    is the share of variance each axis keeps. PCA signs are fixed so the largest loading is positive.
    The PCA is neighbour_reduce.pca_2d, which a remote model runs where its table is (one job).
    """
    pairs = word_pairs(words)
    if _is_remote(lm):
        from core.weights.embeddings_page import embeddings_page

        return embeddings_page(lm, words=pairs).part("projection")
    resolved = [resolve_query(lm, word) for _, word in pairs]
    # (n, H): a few rows, brought to the host for the float64 SVD (mps has no float64, so cast after the copy)
    xy, explained = pca_2d(torch.stack([r.vector for r in resolved]).cpu())  # (n, 2), (2,)
    return projection_frame(pairs, [list(r.pieces) for r in resolved], xy.numpy(), explained.tolist())


def visible(text: str) -> str:
    """Token text with leading/trailing spaces shown as ␣ (a table would hide them)."""
    core = text.strip(" ")
    if not core:
        return "␣" * len(text)
    left = len(text) - len(text.lstrip(" "))
    right = len(text) - len(text.rstrip(" "))
    return "␣" * left + core + "␣" * right
