"""Hidden states and contextual similarity (lecture steps 4 and 5).

Everything here reads `Trace.hidden_states` (layers + 1, T, hidden): entry l is
the input of block l = the output of block l − 1, entry 0 the embedding output
(Hugging Face's `output_hidden_states=True` convention, core/model/parts.py).

- `hidden_state_facts` / `vector_preview`: how many entries, their shapes, and
  the first values of one token's vector (the lecture prints these).
- `word_vectors_across`: the causal-attention demo. The same word in several
  sentences: at layer 0 its vectors are identical (a table lookup); after
  layer 1 they differ wherever the words to its LEFT differ, and stay
  identical where the left context is the same ("how" opening a sentence).
- `similarity_curves`: cosine similarity of one word's vectors between
  sentences, layer by layer, raw and normalized by a baseline cosine (later
  layers are more similar overall: anisotropy, Ethayarajh 2019, "How
  Contextual are Contextualized Word Representations?"). Two baselines: the
  mean cosine over all cross-sentence token pairs of all sentences (pooled,
  one number per layer), and the mean cosine over the token pairs of each
  pair's own two sentences (the lecture's two-sentence recipe applied to every
  pair; for two sentences both are the same). Optional mean-centring removes
  the shared direction before the cosine (Timkey & van Schijndel 2021, "All
  Bark and No Bite: Rogue Dimensions...").

A remote model (core.remote) gets the sentences as text: every sentence runs in one job and only
the cosines (similarity_curves) or the words' vectors (word_vectors_across) come back
(core.remote.context); the reduction is core.running.context_reduce, here and there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.running.context_reduce import similarity_reduce
from core.running.trace import Trace, run_trace

MAX_SENTENCES = 8
IDENTICAL_ATOL = 1e-6  # vectors closer than this (max |difference|) count as identical


def _is_remote(lm: LoadedModel) -> bool:
    """A core.remote model: its forward passes run where lm.remote says (NDIF or its local simulation)."""
    return getattr(lm, "remote", None) is not None


def _as_traces(lm: LoadedModel, sentences: Sequence[str | Trace]) -> list[Trace]:
    return [s if isinstance(s, Trace) else run_trace(lm, s) for s in sentences]


def _as_tokens(lm: LoadedModel, sentences: Sequence[str | Trace]) -> list:
    """Each sentence's tokens (prompt, tokens, offsets): its Trace locally; for a remote model the local
    tokenizer's cut (core.running.lens_page.prompt_tokens), with no job, so only ids and positions are sent."""
    if not _is_remote(lm):
        return _as_traces(lm, sentences)
    from core.running.lens_page import prompt_tokens, tokens_of

    return [tokens_of(s) if isinstance(s, Trace) else prompt_tokens(lm, s) for s in sentences]


def _ids(tokens: list) -> list[list[int]]:
    return [[int(i) for i in t.token_ids] for t in tokens]


def special_mask(trace: Trace) -> np.ndarray:
    """True for tokens that cover no character of the prompt (BOS and other added tokens)."""
    return trace.offsets[:, 1] == trace.offsets[:, 0]  # (T,)


# ---------------------------------------------------------------- hidden-state facts (step 4)


def hidden_state_facts(trace: Trace) -> pd.DataFrame:
    """One row per hidden-state entry: index, what it is, shape as the model returns it, vector norms."""
    entries, T, H = trace.hidden_states.shape
    return facts_table(np.linalg.norm(trace.hidden_states, axis=-1), H)  # norms (L+1, T)


def facts_table(norms: np.ndarray, hidden: int) -> pd.DataFrame:
    """hidden_state_facts from the vector lengths alone (norms (L+1, T)): what a remote model sends back."""
    entries, T = norms.shape
    return pd.DataFrame({
        "entry": range(entries),
        "what": ["token embeddings"] + [f"output of block {i - 1}" for i in range(1, entries)],
        "shape": [f"(1, {T}, {hidden})"] * entries,
        "mean_norm": norms.mean(axis=1),
        "max_norm": norms.max(axis=1),
    })


def vector_preview(trace: Trace, layer: int, position: int, n: int = 8) -> pd.DataFrame:
    """The first `n` numbers of one token's vector at one entry (dimension, value)."""
    entries, T, _ = trace.hidden_states.shape
    if not 0 <= layer < entries:
        raise ValueError(f"Layer {layer} does not exist: this model has entries 0 to {entries - 1}.")
    if not 0 <= position < T:
        raise ValueError(f"Token position {position} does not exist: the prompt has {T} tokens (0 to {T - 1}).")
    values = trace.hidden_states[layer, position, :n]
    return pd.DataFrame({"dimension": range(len(values)), "value": values})


# ---------------------------------------------------------------- finding a word through offsets


def find_word(trace: Trace, word: str, sentence_number: int | None = None) -> list[int]:
    """Token positions that make up the first whole-word occurrence of `word` (case-insensitive).

    Tokens are matched through their character offsets, so a word cut into
    several pieces ("AirPods" -> "Air", "Pods") gives several positions.
    A sentence without the word raises ValueError naming the sentence.
    """
    word = word.strip()
    if not word:
        raise ValueError("Type the word to follow (for example: apple).")
    # \b only works next to word characters; for other ends (Chinese, punctuation) match anywhere
    left = r"\b" if re.match(r"\w", word[0]) else ""
    right = r"\b" if re.match(r"\w", word[-1]) else ""
    match = re.search(left + re.escape(word) + right, trace.prompt, flags=re.IGNORECASE)
    name = f"sentence {sentence_number + 1} " if sentence_number is not None else ""
    if match is None:
        raise ValueError(f'The word "{word}" is not in {name}"{trace.prompt}".')
    start, end = match.span()
    covers = (trace.offsets[:, 0] < end) & (trace.offsets[:, 1] > start) & ~special_mask(trace)  # (T,)
    positions = np.flatnonzero(covers).tolist()
    if not positions:
        raise ValueError(f'The word "{word}" in {name}"{trace.prompt}" was cut off (the prompt is too long).')
    return positions


def word_vectors(trace: Trace, positions: list[int]) -> np.ndarray:
    """The word's vector at every entry: the mean of its pieces."""
    return trace.hidden_states[:, positions].mean(axis=1)  # (L+1, H)


def word_pieces(lm: LoadedModel, sentences: Sequence[str | Trace], word: str) -> pd.DataFrame:
    """Which tokens stand for `word` in each sentence (shown to the user)."""
    rows = []
    for i, trace in enumerate(_as_tokens(lm, sentences)):
        positions = find_word(trace, word, i)
        rows.append({"sentence": i + 1, "text": trace.prompt, "positions": ", ".join(map(str, positions)),
                     "tokens": " + ".join(repr(trace.tokens[p]) for p in positions), "pieces": len(positions)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the causal demo (step 4)


def word_vectors_across(lm: LoadedModel, sentences: Sequence[str | Trace], words: Sequence[str],
                        n_values: int = 4) -> pd.DataFrame:
    """The same word's vector in several sentences, at every entry.

    One row per (layer, word, sentence that contains it): the first values,
    the largest difference from the word's vector in the first sentence that
    contains it, and `identical` (difference below IDENTICAL_ATOL).
    Sentences without a word are skipped for that word; a word in no sentence is an error.
    A remote model runs every sentence in one job and sends back only the words' vectors.
    """
    traces = _as_tokens(lm, sentences)
    plans = word_plans(traces, words)
    if _is_remote(lm):
        from core.remote.context import context_job

        stacks = context_job(lm, _ids(traces), "word vectors", vectors=asked_vectors(plans))  # each (L+1, S_w, H)
        per_word = [[stack[:, k] for k in range(stack.shape[1])] for stack in stacks]
    else:
        per_word = [[word_vectors(trace, positions) for _, trace, positions in found] for found in plans]
    return vector_table(words, plans, per_word, n_values)


def word_plans(traces: list, words: Sequence[str]) -> list[list[tuple]]:
    """Per word: (sentence index, its tokens, the word's positions) for each sentence that holds it."""
    plans = []
    for word in words:
        found = []
        for i, trace in enumerate(traces):
            try:
                found.append((i, trace, find_word(trace, word, i)))
            except ValueError:
                continue  # the demo compares a word only where it occurs
        if not found:
            raise ValueError(f'The word "{word}" is in none of the sentences.')
        plans.append(found)
    return plans


def asked_vectors(plans: list[list[tuple]]) -> list[list[tuple[int, list[int]]]]:
    """What a remote job is asked for: per word, (sentence index, positions) of each sentence that holds it."""
    return [[(i, positions) for i, _, positions in found] for found in plans]


def vector_table(words: Sequence[str], plans: list[list[tuple]], per_word: list[list[np.ndarray]],
                 n_values: int) -> pd.DataFrame:
    """word_vectors_across's rows from each word's vectors (per_word[w][k]: (L+1, H) in plans[w][k]'s sentence)."""
    rows = []
    for word, found, vectors in zip(words, plans, per_word):  # vectors: each (L+1, H)
        for layer in range(vectors[0].shape[0]):
            reference = vectors[0][layer]
            for (i, trace, positions), vector in zip(found, vectors):
                difference = float(np.abs(vector[layer] - reference).max())
                rows.append({
                    "layer": layer, "word": word, "sentence": i + 1, "text": trace.prompt,
                    "position": ", ".join(map(str, positions)),
                    "first_values": ", ".join(f"{v:.4f}" for v in vector[layer, :n_values]),
                    "max_difference": difference, "identical": difference <= IDENTICAL_ATOL,
                })
    return pd.DataFrame(rows)


def difference_by_layer(table: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, word): the largest difference between that word's vectors across sentences."""
    return (table.groupby(["word", "layer"], as_index=False)["max_difference"].max()
            .assign(identical=lambda d: d["max_difference"] <= IDENTICAL_ATOL))


# ---------------------------------------------------------------- similarity curves (step 5)


def similarity_curves(lm: LoadedModel, sentences: Sequence[str | Trace], word: str, *,
                      exclude_bos: bool = False, center: bool = False) -> pd.DataFrame:
    """Cosine similarity of `word`'s vectors for every sentence pair at every layer.

    Columns: layer, relative_depth (layer / number of layers), pair ("i-j",
    0-based, i<j), i, j, cosine, baseline, normalized (= cosine / baseline),
    pair_baseline, pair_normalized (= cosine / pair_baseline).
    `baseline` (pooled) at a layer is the mean cosine over every pair of tokens
    taken from two different sentences, the same for all pairs. `pair_baseline`
    is the mean cosine over the token pairs of sentences i and j only (every
    token of i with every token of j): the lecture's two-sentence recipe, per
    pair. With two sentences the two baselines are equal. `exclude_bos` leaves BOS and
    other added tokens out of the baseline (and out of the mean used for
    centring); `center` subtracts, at each layer, the mean vector of all tokens
    of all sentences before every cosine.
    """
    if not 2 <= len(sentences) <= MAX_SENTENCES:
        raise ValueError(f"Give between 2 and {MAX_SENTENCES} sentences (got {len(sentences)}).")
    traces = _as_tokens(lm, sentences)
    positions = [find_word(trace, word, i) for i, trace in enumerate(traces)]
    keep = [~special_mask(t) if exclude_bos else np.ones(len(t.tokens), bool) for t in traces]  # each (T_s,)
    if _is_remote(lm):  # every sentence in one job; the reduction runs where the model runs
        from core.remote.context import context_job

        reduced = context_job(lm, _ids(traces), "contextual similarity", words=positions,
                              tokens=[np.flatnonzero(k).tolist() for k in keep], center=center)
    else:
        words = torch.from_numpy(np.stack([word_vectors(t, p) for t, p in zip(traces, positions)]))  # (S, L+1, H)
        tokens = [torch.from_numpy(t.hidden_states[:, k]) for t, k in zip(traces, keep)]  # each (L+1, T_s, H)
        reduced = {name: value.numpy() for name, value in similarity_reduce(words, tokens, center).items()}
    cosines, baseline, pair_baselines = reduced["cosine"], reduced["baseline"], reduced["pair_baseline"]

    num_layers = cosines.shape[-1] - 1
    frames = []
    for i in range(len(traces)):
        for j in range(i + 1, len(traces)):
            cosine = cosines[i, j]  # (L+1,)
            frames.append(pd.DataFrame({
                "layer": np.arange(num_layers + 1), "relative_depth": np.arange(num_layers + 1) / num_layers,
                "pair": f"{i}-{j}", "i": i, "j": j, "cosine": cosine, "baseline": baseline,
                "normalized": cosine / baseline,
                "pair_baseline": pair_baselines[i, j], "pair_normalized": cosine / pair_baselines[i, j],
            }))
    return pd.concat(frames, ignore_index=True)


def pair_label(sentences: Sequence[str], i: int, j: int, width: int = 28) -> str:
    """A legend entry naming a pair by its sentences: '1 "I ate an apple…" vs 2 "She baked…"'."""
    def short(text: str) -> str:
        return text if len(text) <= width else text[: width - 1].rstrip() + "…"

    return f'{i + 1} "{short(sentences[i])}" vs {j + 1} "{short(sentences[j])}"'
