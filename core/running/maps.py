"""Hidden-state maps: 2-D pictures of words *in context*, layer by layer (lecture step 3's projections).

The user picks words in sentences, in groups ("apple" in fruit sentences vs company
sentences; city names grouped by continent). Each (sentence, word) becomes one point:

- its vector at a layer is read from `Trace.hidden_states` (layers + 1, T, hidden)
  at the tokens that cover the word's characters: the mean of its sub-tokens
  (as `core.running.context.word_vectors` does) or only its last sub-token (in a causal
  model the last piece is the first position that has read the whole word);
- the points of one layer are projected on their first two principal components
  (PCA, scikit-learn's `PCA`: centre, then the top right-singular vectors);
- how well the groups separate is measured at every layer by two numbers, both
  from scikit-learn:
  - the silhouette score with cosine distance (Rousseeuw 1987, "Silhouettes: a
    graphical aid to the interpretation and validation of cluster analysis"):
    +1 = every point much closer to its own group than to the nearest other
    group, 0 = groups overlap, negative = points sit nearer another group;
  - the leave-one-out accuracy of a nearest-centroid probe (scikit-learn's
    `NearestCentroid` scored by `cross_val_score` with `LeaveOneOut`): each point
    in turn is left out, the group centroids are computed from the others, and
    the point is assigned to the nearest centroid. Vectors are scaled to length 1
    first, so "nearest" follows the direction (like the cosine), not a few huge
    coordinates. NaN where all points coincide (nothing to tell apart). A probe
    in the sense of Alain & Bengio 2016, "Understanding intermediate layers using
    linear classifier probes", kept as simple as possible (no weights to fit).

These are measures of the *given* points: with a dozen sentences they say whether
these groups separate, not that a model "knows" a concept in general.

Every one of these numbers depends only on the inner products between one layer's item vectors
(an orthogonal change of basis changes none of them, up to the sign of a PCA axis). So the
vectors are reduced to one Gram matrix per layer (core.running.maps_reduce, torch only: the one
description of the analysis), and everything above is computed from the Gram matrices alone, on
points rebuilt from them (`embedding`). A remote model (core.remote.maps) runs every sentence in
one job and sends back only those (L+1, N, N) numbers; a local one goes through the same route,
so both give the same numbers by construction.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from core.model.loaded import LoadedModel
from core.running.context import find_word, special_mask
from core.running.maps_items import MAX_ITEMS, PRESETS, MapItem, check_items, parse_items  # noqa: F401 (re-exported)
from core.running.maps_reduce import POOLINGS, gram, pool
from core.running.trace import Trace, run_trace


def item_positions(trace, item: MapItem, number: int) -> list[int]:
    """Token positions covering the item's characters (BOS and other added tokens never count).

    `trace`: a Trace, or a remote model's tokens from the local tokenizer (core.running.lens_page.prompt_tokens).
    """
    if trace.prompt != item.sentence:
        raise ValueError(f'Sentence {number + 1} was run as "{trace.prompt}", not "{item.sentence}".')
    covers = (trace.offsets[:, 0] < item.end) & (trace.offsets[:, 1] > item.start) & ~special_mask(trace)  # (T,)
    positions = np.flatnonzero(covers).tolist()
    if not positions:  # only when the sentence was cut at the token limit before the word
        return find_word(trace, item.word, number)
    return positions


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")


def _item_tensor(traces: Sequence[Trace], items: Sequence[MapItem], pooling: str) -> torch.Tensor:
    """Each item's vector at every entry, pooled by maps_reduce.pool (as a remote job pools): (N, L+1, H)."""
    check_pooling(pooling)
    vectors = []
    for number, (trace, item) in enumerate(zip(traces, items)):
        positions = item_positions(trace, item, number)
        rows = torch.from_numpy(trace.hidden_states[:, positions])  # (L+1, P, H): a copy (the Trace is read-only)
        vectors.append(pool(rows, list(range(len(positions))), pooling))  # (L+1, H)
    return torch.stack(vectors)  # (N, L+1, H)


def item_vectors(traces: Sequence[Trace], items: Sequence[MapItem], pooling: str = "mean") -> np.ndarray:
    """Each item's vector at every entry: (items, layers + 1, hidden)."""
    return _item_tensor(traces, items, pooling).numpy()


def item_grams(traces: Sequence[Trace], items: Sequence[MapItem], pooling: str = "mean") -> np.ndarray:
    """The items' inner products at every entry, float64 (layers + 1, items, items): what the maps are made of."""
    return gram(_item_tensor(traces, items, pooling)).numpy()


def embedding(gram_matrix: np.ndarray) -> np.ndarray:
    """Points X' (N, N) whose inner products are `gram_matrix` (N, N): the items in an orthonormal basis of
    their own span, so every distance, length and angle is theirs (X' = X W, W with orthonormal columns).

    From eigh(G) = V diag(λ) V^T: X' = V diag(√λ). Eigenvalues below G's numerical resolution
    (N · eps · λ_max, numpy's matrix_rank rule) are set to 0: they are rounding, not directions.
    """
    values, vectors = np.linalg.eigh(gram_matrix.astype(np.float64))
    floor = len(values) * np.finfo(np.float64).eps * max(float(values.max()), 0.0)
    return vectors * np.sqrt(np.where(values > floor, values, 0.0))  # (N, N)


def item_pieces(traces: Sequence[Trace], items: Sequence[MapItem]) -> pd.DataFrame:
    """Which tokens stand for each item's word (shown to the user): sentence, group, word, tokens, positions."""
    rows = []
    for number, (trace, item) in enumerate(zip(traces, items)):
        positions = item_positions(trace, item, number)
        rows.append({"sentence": number + 1, "group": item.group, "word": item.word, "text": item.sentence,
                     "tokens": " + ".join(repr(trace.tokens[p]) for p in positions),
                     "positions": ", ".join(map(str, positions)), "pieces": len(positions)})
    return pd.DataFrame(rows)


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal-component coordinates of (N, H) points, and the share of variance of each.

    Points that are all the same (layer 0 for one token in every sentence) have no
    direction to project on: they all sit at (0, 0) with 0 % explained.
    """
    if np.allclose(vectors, vectors[:1]):
        return np.zeros((len(vectors), 2)), np.zeros(2)
    pca = PCA(n_components=2, svd_solver="full")
    coordinates = pca.fit_transform(vectors.astype(np.float64))  # (N, 2)
    return orient(coordinates), pca.explained_variance_ratio_


def orient(coordinates: np.ndarray) -> np.ndarray:
    """Each axis signed so that the first point lying at least half as far out as the farthest is positive.

    A principal axis has no sign of its own (scikit-learn picks one from the basis, which a Gram
    matrix does not fix); this rule reads the coordinates alone, so any basis gives the same map,
    and a rounding difference cannot flip it (unlike "the farthest point is positive" with two near-ties).
    """
    out = coordinates.copy()
    for axis in range(out.shape[1]):
        column = out[:, axis]
        if np.abs(column).max() > 0:
            out[:, axis] *= np.sign(column[np.abs(column) >= 0.5 * np.abs(column).max()][0])
    return out


def map_points(layers: np.ndarray, items: Sequence[MapItem]) -> pd.DataFrame:
    """PCA coordinates of every item at every entry (each layer projected on its own); layers (L+1, N, D):
    each entry's points in any orthonormal basis (`embedding` of its Gram matrix).

    Columns: layer, relative_depth, sentence (1-based), group, word, text, x, y,
    explained_x, explained_y (share of the variance along each axis).
    """
    entries, n_items, _ = layers.shape
    frames = []
    for layer in range(entries):
        coordinates, explained = pca_2d(layers[layer])
        frames.append(pd.DataFrame({
            "layer": layer, "relative_depth": layer / (entries - 1), "sentence": np.arange(1, n_items + 1),
            "group": [item.group for item in items], "word": [item.word for item in items],
            "text": [item.sentence for item in items], "x": coordinates[:, 0], "y": coordinates[:, 1],
            "explained_x": explained[0], "explained_y": explained[1],
        }))
    return pd.concat(frames, ignore_index=True)


def probe_accuracy(vectors: np.ndarray, groups: Sequence[str]) -> float:
    """Leave-one-out accuracy of a nearest-centroid probe on length-1 vectors (N, H).

    NaN when every point is the same (nothing to tell apart: NearestCentroid refuses such data).
    """
    unit = normalize(vectors.astype(np.float64))
    if np.allclose(unit, unit[:1]):
        return float("nan")
    with warnings.catch_warnings():
        # "within-class std has a zero": only matters for shrinkage, which the probe does not use
        warnings.simplefilter("ignore", UserWarning)
        scores = cross_val_score(NearestCentroid(), unit, np.asarray(groups), cv=LeaveOneOut())
    return float(scores.mean())


def cosine_silhouette(vectors: np.ndarray, groups: Sequence[str]) -> float:
    """Mean silhouette of (N, H) points with cosine distance; 0 when every point is the same."""
    if np.allclose(vectors, vectors[:1]):
        return 0.0  # no distances at all: the groups are not separated
    return float(silhouette_score(vectors.astype(np.float64), np.asarray(groups), metric="cosine"))


def separation(layers: np.ndarray, groups: Sequence[str]) -> pd.DataFrame:
    """How well the groups separate at each entry: layer, relative_depth, silhouette, probe_accuracy.
    layers (L+1, N, D): each entry's points, as map_points takes them.

    The probe fits one tiny model per point and layer (~600 fits for 20 points and 30
    layers). Two settings keep that fast: one OpenMP thread for scikit-learn's distance
    kernels (on 20 points, waking a thread pool costs far more than the arithmetic: 4x
    slower measured on 2 busy cores; omp_set_num_threads sets the calling thread's
    count, so other sessions' threads are not affected), and no re-validation of parameters on every fit.
    """
    entries = layers.shape[0]
    with threadpool_limits(limits=1, user_api="openmp"), \
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        silhouettes = [cosine_silhouette(layers[layer], groups) for layer in range(entries)]
        accuracies = [probe_accuracy(layers[layer], groups) for layer in range(entries)]
    return pd.DataFrame({
        "layer": np.arange(entries),
        "relative_depth": np.arange(entries) / (entries - 1),
        "silhouette": silhouettes,
        "probe_accuracy": accuracies,
    })


@dataclass(frozen=True)
class HiddenStateMaps:
    points: pd.DataFrame  # map_points: every layer's 2-D map
    separation: pd.DataFrame  # separation: one row per layer
    pieces: pd.DataFrame  # item_pieces: the tokens behind every point
    grams: np.ndarray  # (L+1, N, N) float64: the items' inner products, every number above is read from these


def maps_from_grams(grams: np.ndarray, items: Sequence[MapItem], pieces: pd.DataFrame) -> HiddenStateMaps:
    """HiddenStateMaps from the items' Gram matrices alone (L+1, N, N): what a remote model sends back."""
    layers = np.stack([embedding(g) for g in grams])  # (L+1, N, N)
    return HiddenStateMaps(map_points(layers, items), separation(layers, [item.group for item in items]), pieces,
                           grams)


def hidden_state_maps(traces: Sequence[Trace], items: Sequence[MapItem], pooling: str = "mean") -> HiddenStateMaps:
    """Everything the page draws for one model; `traces[i]` is the trace of `items[i].sentence`."""
    check_items(items)
    if len(traces) != len(items):
        raise ValueError(f"{len(traces)} traces for {len(items)} sentences")
    return maps_from_grams(item_grams(traces, items, pooling), items, item_pieces(traces, items))


def model_maps(lm: LoadedModel, items: Sequence[MapItem], pooling: str = "mean",
               traces: Sequence[Trace] | None = None) -> HiddenStateMaps:
    """hidden_state_maps of `lm` on the items' sentences (its `traces` if given, else run here).

    A remote model (core.remote) runs every sentence in ONE job, pools and takes the Gram matrices
    there, and sends back only those (L+1, N, N) float64 numbers; the word's tokens come from the
    local tokenizer (no job), so only token ids and positions are sent.
    """
    if getattr(lm, "remote", None) is None:
        return hidden_state_maps(traces if traces is not None else [run_trace(lm, i.sentence) for i in items],
                                 items, pooling)
    from core.remote.maps import maps_job
    from core.running.lens_page import prompt_tokens

    check_items(items)
    check_pooling(pooling)
    tokens = [prompt_tokens(lm, item.sentence) for item in items]
    positions = [item_positions(t, item, number) for number, (t, item) in enumerate(zip(tokens, items))]
    grams = maps_job(lm, [[int(i) for i in t.token_ids] for t in tokens], positions, pooling)  # (L+1, N, N)
    return maps_from_grams(grams, items, item_pieces(tokens, items))


def layer_at_depth(relative_depth: float, num_layers: int) -> int:
    """The entry nearest to a relative depth (0 = token embeddings, 1 = last layer)."""
    return int(round(min(max(relative_depth, 0.0), 1.0) * num_layers))
