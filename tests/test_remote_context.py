"""Contextual similarity and the word-vector demo of a remote model: core's own numbers, every sentence in one job.

Through nnsight's local simulation of NDIF (`remote="local"`: the request serialized as for NDIF, our
modules hidden while it is deserialized), similarity_curves and word_vectors_across must give the
local path's columns and numbers (within 1e-5, fp32) on the tiny model of a few families and the
embedded SmolLM2, each call ONE job, the model left as it was (no hooks, a plain local run bit for bit
the same). What comes back for Llama-3.1-405B is sized on the meta device. The similarity page with
model A simulated and model B local draws core's local numbers for A.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from core import load_model, run_trace, similarity_curves, word_vectors_across
from core.loading.load import build_on_meta
from core.model.loaded import LoadedModel
from core.remote.context import similarity_bytes, vector_bytes
from core.remote.model import RemoteModel, remote_model
from core.running.context import word_pieces
from core.remote.budget import LECTURE_TOKENS, PAGE_BUDGET
from tests.test_remote import folders, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import counted_jobs, hook_state

pytestmark = pytest.mark.embedded  # SmolLM2 and the page's model B are embedded
APPLE = ["I ate an apple for breakfast", "She baked an apple pie for dessert",
         "The company that makes iPads and AirPods is called apple"]
DEMO = ["how about you?", "how are you?", "nice to meet you"]  # the hidden-states page's defaults
NUMBERS = ["cosine", "baseline", "normalized", "pair_baseline", "pair_normalized"]


def same_curves(got: pd.DataFrame, expected: pd.DataFrame) -> float:
    """Same columns and labels; the largest numeric difference (asserted within 1e-5)."""
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    assert got.drop(columns=NUMBERS).equals(expected.drop(columns=NUMBERS))
    difference = float(np.abs(got[NUMBERS].to_numpy(float) - expected[NUMBERS].to_numpy(float)).max())
    assert difference <= 1e-5
    return difference


def same_vectors(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    labels = ["layer", "word", "sentence", "text", "position", "identical"]
    assert got[labels].equals(expected[labels])
    assert np.abs(got["max_difference"] - expected["max_difference"]).max() <= 1e-5
    first = [np.array([[float(v) for v in row.split(", ")] for row in t["first_values"]]) for t in (got, expected)]
    assert np.abs(first[0] - first[1]).max() <= 2e-4  # printed to 4 decimals


@pytest.mark.parametrize("kind", ["llama", "gemma3", "gpt2", "opt"])
def test_simulated_context_is_the_local_context(folders, monkeypatch, kind, tmp_path):
    """Every option of similarity_curves and the how/you demo through the simulation = the local path, one job each."""
    if kind not in folders:
        from tests.tiny import save_tiny

        folders[kind] = save_tiny(kind, tmp_path / kind)
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, APPLE[0])
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    for exclude_bos in (False, True):
        for center in (False, True):
            expected = similarity_curves(local, APPLE, "apple", exclude_bos=exclude_bos, center=center)
            same_curves(similarity_curves(lm, APPLE, "apple", exclude_bos=exclude_bos, center=center), expected)
    assert len(jobs) == 4 and all(job.stats.outcome == "completed" for job in jobs)
    assert lm.remote.last.bytes_received == similarity_bytes(local, len(APPLE), 1) < 2**16
    same_vectors(word_vectors_across(lm, DEMO, ["how", "you"], n_values=3),
                 word_vectors_across(local, DEMO, ["how", "you"], n_values=3))
    assert len(jobs) == 5  # both words' vectors in one job: (L+1) x (2 + 3) x H float32
    assert lm.remote.last.bytes_received == vector_bytes(local.num_layers, local.parts.layout.hidden_size, [2, 3])
    assert word_pieces(lm, APPLE, "apple").equals(word_pieces(local, APPLE, "apple")) and len(jobs) == 5  # no job
    assert hook_state(local.model) == hooks
    after = run_trace(local, APPLE[0])
    assert np.array_equal(after.hidden_states, before.hidden_states)
    assert np.array_equal(after.last_logits, before.last_logits)


def test_smollm_context(smollm, monkeypatch):
    """The embedded SmolLM2: the similarity page's four-sentence preset, centred, and the lecture's demo."""
    lm = remote_model(smollm, "local")
    jobs = counted_jobs(monkeypatch, lm)
    traces = [run_trace(smollm, s) for s in APPLE]
    for center in (False, True):
        difference = same_curves(similarity_curves(lm, APPLE, "apple", center=center),
                                 similarity_curves(smollm, traces, "apple", center=center))
        print(f"SmolLM2 similarity (center={center}): max difference {difference:.1e}")
    got = word_vectors_across(lm, DEMO, ["how", "you"])
    same_vectors(got, word_vectors_across(smollm, DEMO, ["how", "you"]))
    assert got.groupby("word")["identical"].all().to_dict() == {"how": True, "you": False}
    assert len(jobs) == 3


def test_context_bytes_405b():
    """Llama-3.1-405B from its config on the meta device: the similarity page (8 sentences at most) and the
    hidden-states page's default demo ("how" in 2 sentences, "you" in 3: (127 x 5 x 16,384) float32)."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                         tie_word_embeddings=False)
    model = build_on_meta(config)
    lm = LoadedModel("llama-405b", None, model, None, False, "meta", model.dtype, 0.0)
    assert (lm.num_layers, lm.parts.layout.hidden_size) == (126, 16_384)
    similarity = similarity_bytes(lm, 8, LECTURE_TOKENS)
    vectors = vector_bytes(lm.num_layers, lm.parts.layout.hidden_size, [2, 3])
    assert 2 * 8 * 8 * 127 * 4 < similarity < 2**17  # cosines and pair baselines (8, 8, 127) fp32, baseline (127,)
    assert 127 * 5 * 16_384 * 4 <= vectors <= 127 * 5 * 16_384 * 4 + 4096 and vectors <= PAGE_BUDGET
    print(f"Llama-3.1-405B: similarity page (8 sentences) {similarity:,} bytes, word vectors {vectors:,} bytes")


@pytest.fixture
def page_folder(tmp_path, tiny_folders):
    """A copy of the tiny Llama for the page: a model new to the server's model store."""
    return str(shutil.copytree(tiny_folders["llama"], tmp_path / "tiny-llama"))


@pytest.mark.app
def test_similarity_page_runs_a_remote_model(page_folder, monkeypatch):
    """Model A simulated, model B (embedded Gemma 3 270M) local: A's curves are core's local numbers, one job."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
    import ui
    from tests.apptest import assert_clean, run_page
    from tests.test_pages_context import chart_data

    page_slots = ui.page_slots
    monkeypatch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, True))  # RUNS_REMOTE
    started, new_job = [], RemoteModel.new_job
    monkeypatch.setattr(RemoteModel, "new_job", lambda self, *a, **k: started.append(new_job(self, *a, **k))
                        or started[-1])
    app = run_page(query={"a": page_folder, "place_a": "remote", "ndif_a": "local"})
    app.switch_page("views/running/similarity.py").run()
    assert_clean(app)
    assert not app.error and len(app.get("vega_lite_chart")) == 1 and len(started) == 1
    slots = app.session_state["_slots"]
    sentences = [s.strip() for s in app.session_state["sim_sentences"].splitlines()]
    drawn = chart_data(app.get("vega_lite_chart")[0])
    assert json.loads(app.get("vega_lite_chart")[0].proto.spec)["encoding"]["y"]["field"] == "normalized"
    local = load_model(page_folder, device="cpu")
    for slot, lm in zip(slots, (local, slots[1].lm)):
        expected = similarity_curves(lm, sentences, "apple").query("layer > 0")
        got = drawn[drawn["model"] == slot.title].sort_values(["pair", "layer"])
        assert got["layer"].tolist() == expected["layer"].tolist()
        np.testing.assert_allclose(got[["cosine", "normalized"]].to_numpy(float),
                                   expected[["cosine", "normalized"]].to_numpy(float), atol=1e-5)
    assert ui.remote_of(slots[0].lm) is not None and ui.remote_of(slots[1].lm) is None
