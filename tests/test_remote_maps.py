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


def test_maps_depend_on_the_gram_alone():
    """The same points in another orthonormal basis (X Q, Q a random rotation of R^H) give the same map,
    signs included, and the same scores: what a Gram matrix cannot tell apart, the page never shows."""
    from core.running.maps import embedding, map_points, separation

    rng = np.random.default_rng(0)
    items = parse_items(TINY)
    x = rng.normal(size=(3, len(items), 40)) + np.array([3.0] * 3 + [-3.0] * 3)[None, :, None]  # (L+1, N, H)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))  # orthogonal (H, H)
    rotated = x @ q
    groups = [item.group for item in items]
    for points in (x, rotated):
        grams = np.einsum("lnh,lmh->lnm", points, points)
        rebuilt = np.stack([embedding(g) for g in grams])  # (L+1, N, N)
        np.testing.assert_allclose(np.einsum("lnh,lmh->lnm", rebuilt, rebuilt), grams, atol=1e-9)
    a, b = map_points(x, items), map_points(rotated, items)
    np.testing.assert_allclose(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy(), atol=1e-9)
    pd.testing.assert_frame_equal(separation(x, groups), separation(rotated, groups), atol=1e-12)
    assert separation(x, groups)["probe_accuracy"].eq(1.0).all()  # two groups 6 units apart


def test_maps_bytes_405b():
    """Llama-3.1-405B from its config on the meta device: MAX_ITEMS items bring back one (127, 24, 24) float64
    tensor, under the 64 MB page budget (the items' vectors would be 24 x 127 x 16,384 x 4 B = 200 MB)."""
    lm = meta_model(llama_405b_config())
    size = maps_bytes(lm, MAX_ITEMS)
    assert 127 * MAX_ITEMS**2 * 8 <= size <= 127 * MAX_ITEMS**2 * 8 + 2048 and size <= PAGE_BUDGET
    print(f"Llama-3.1-405B hidden-state maps, {MAX_ITEMS} items: {size:,} bytes")


@pytest.mark.embedded
def test_smollm_apple_simulated_is_local(smollm, monkeypatch):
    """SmolLM2-135M on half the apple preset through the simulation: the local maps and scores, in ONE job."""
    lm = remote_model(smollm, "local")
    jobs = counted_jobs(monkeypatch, lm)
    preset = parse_items(PRESETS["apple: 6 fruit, 6 company"])
    items = preset[:3] + preset[6:9]  # 3 fruit, 3 company: each sentence is a forward pass on 2 busy cores
    got = model_maps(lm, items)
    expected = hidden_state_maps([run_trace(smollm, item.sentence) for item in items], items)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    np.testing.assert_allclose(got.grams, expected.grams, rtol=1e-5, atol=1e-6 * np.abs(expected.grams).max())
    difference = same_maps(got, expected)
    middle = expected.separation.iloc[layer_at_depth(0.5, smollm.num_layers)]
    assert middle["silhouette"] > 0.3 and middle["probe_accuracy"] == 1.0  # the senses separate mid-model
    print(f"SmolLM2 apple: points max difference {difference:.1e}, {lm.remote.last.bytes_received:,} bytes back")


@pytest.mark.app
@pytest.mark.embedded  # model B: the embedded Gemma 3 270M, run here
def test_maps_page_runs_a_simulated_model_in_one_job(folders, jobs):
    """A on remote="local", B here: A's scores, map and token pieces are core's local numbers, from ONE job
    that brought back maps_bytes; a new depth on the slider sends none (every layer's Gram came back)."""
    import export
    from tests.test_page_remote import remote_facts

    query = {"a": folders["llama"], "place_a": "remote", "ndif_a": "local", "maps_items": TINY, "maps_depth": "0.5"}
    app = run_page(PAGE, query=query)
    assert_clean(app)
    assert not app.error, [e.value for e in app.error]
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    local = load_model(folders["llama"], device="cpu")
    items = parse_items(TINY)
    expected = hidden_state_maps([run_trace(local, item.sentence) for item in items], items)

    def shown_for(depth: float) -> None:
        layer = layer_at_depth(depth, local.num_layers)
        row = expected.separation.iloc[layer]
        accuracy = "—" if np.isnan(row["probe_accuracy"]) else f"{row['probe_accuracy']:.0%}"
        assert [(m.label, m.value) for m in app.metric][:2] == [("Silhouette (cosine)", f"{row['silhouette']:.3f}"),
                                                              ("Nearest-centroid accuracy", accuracy)]
        drawn = next(i.table for i in app.session_state[export.ITEMS_KEY] if i.name == "hidden_state_map_A_chart")
        points = expected.points[expected.points["layer"] == layer]
        np.testing.assert_allclose(drawn[["x", "y"]].to_numpy(), points[["x", "y"]].to_numpy(), atol=1e-6)
        assert drawn["text"].tolist() == [item.sentence for item in items]

    shown_for(0.5)
    pieces = next(f.value for f in app.dataframe if "tokens" in f.value.columns)  # A's column comes first
    assert pieces["tokens"].tolist() == expected.pieces["tokens"].tolist()
    assert pieces["positions"].tolist() == expected.pieces["positions"].tolist()
    assert len(app.get("vega_lite_chart")) == 3  # a map per model + the separation chart

    app.slider(key="maps_depth").set_value(1.0).run()
    assert_clean(app)
    assert not app.error and len(jobs) == 1
    shown_for(1.0)
    app.switch_page("views/home.py").run()
    assert remote_facts(app)["Bytes received"] == f"{maps_bytes(local, len(items)):,}"


@pytest.mark.app
@pytest.mark.embedded
def test_maps_page_with_an_unreachable_ndif(folders, jobs):
    """A on an NDIF that cannot be reached (on the meta device): the one failed job is one message in A's
    column only, B's map and the separation chart still draw; nothing is cached, so the next run asks again, once."""
    from tests.test_page_remote import REPO, closed_port, messages

    url = f"http://127.0.0.1:{closed_port()}"
    app = run_page(PAGE, query={"a": folders["llama"], "place_a": "remote", "ndif_a": "url", "ndif_url_a": url,
                                "ndif_repo_a": REPO, "maps_items": TINY})
    assert_clean(app)
    assert app.session_state["_slots"][0].lm.device == "meta"
    errors = messages(app, "error")
    assert len(errors) == 1 and errors[0].startswith(f"Offline: could not reach NDIF at {url}")
    assert [c.error[0].value for c in app.columns if c.error] == errors  # in A's column only
    assert len(jobs) == 1 and jobs[0].stats.outcome == "failed"
    assert len(app.get("vega_lite_chart")) == 2  # B's map and the separation chart (B's line)
    assert [m.label for m in app.metric] == ["Silhouette (cosine)", "Nearest-centroid accuracy"]  # B's
    app.run()
    assert len(jobs) == 2 and len(messages(app, "error")) == 1  # not cached: asked again, once
