"""Hidden-state maps on a remote model (issue 18): the local numbers from ONE job, only Gram matrices back.

Model A is a tiny random model (tests/tiny.py) on nnsight's local simulation of NDIF (`remote="local"`).
The Gram matrices are checked against the model's own forward pass (output_hidden_states, no Trace,
no nnsight); the points, separation scores and token pieces against core's local path on the same
weights; the bytes against maps_bytes, which also sizes the job for Llama-3.1-405B on the meta device.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from core import load_model, run_trace
from core.remote.budget import PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.maps import maps_bytes
from core.remote.model import remote_model
from core.running.maps import MAX_ITEMS, PRESETS, hidden_state_maps, layer_at_depth, model_maps, parse_items
from tests.apptest import assert_clean, run_page
from tests.test_maps import TINY, expected_vectors
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)
from tests.test_remote_lens import counted_jobs, hook_state

PAGE = "views/running/hidden_state_maps.py"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_folders):
    """Copies of the tiny models of this module only: its models are new to the server's model store."""
    root = tmp_path_factory.mktemp("remote-maps")
    return {kind: str(shutil.copytree(tiny_folders[kind], root / kind)) for kind in ("llama", "gemma3")}


def same_maps(got, expected) -> float:
    """Identical labels and pieces, points and scores within float tolerance; returns the largest point difference."""
    labels = ["layer", "relative_depth", "sentence", "group", "word", "text"]
    assert got.points[labels].equals(expected.points[labels])
    assert got.pieces.equals(expected.pieces)
    xy = ["x", "y", "explained_x", "explained_y"]
    difference = float(np.abs(got.points[xy].to_numpy() - expected.points[xy].to_numpy()).max())
    assert difference <= 1e-6 * max(1.0, float(np.abs(expected.points[["x", "y"]].to_numpy()).max()))
    pd.testing.assert_frame_equal(got.separation, expected.separation, atol=1e-9, rtol=1e-7)
    return difference


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_maps_simulated_are_local(folders, monkeypatch, kind):
    """model_maps through the simulation: the Gram matrices of the model's own hidden states, and the same
    points, silhouettes, probe accuracies and pieces as the local path; ONE job per call, no hooks left."""
    local = load_model(folders[kind], device="cpu")
    lm = remote_model(local, "local")
    items = parse_items(TINY)
    traces = [run_trace(local, item.sentence) for item in items]  # transformers installs its own capture hooks
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)  # ours: none may stay
    for pooling in ("mean", "last"):
        got = model_maps(lm, items, pooling)
        assert len(jobs) == 1 + ("mean", "last").index(pooling) and jobs[-1].stats.outcome == "completed"
        vectors = expected_vectors(local, items, pooling)  # (N, L+1, H) float64, from the model's forward pass
        expected = np.einsum("nlh,mlh->lnm", vectors, vectors)  # (L+1, N, N)
        assert got.grams.shape == expected.shape and got.grams.dtype == np.float64
        np.testing.assert_allclose(got.grams, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        difference = same_maps(got, hidden_state_maps(traces, items, pooling))
        assert lm.remote.last.bytes_received == maps_bytes(local, len(items))
        print(f"{kind} {pooling}: points max difference {difference:.1e}, "
              f"{lm.remote.last.bytes_received:,} bytes back")
    assert hook_state(local.model) == hooks
