"""Pages on a remote model (issue 18): what they draw is core's local numbers, from ONE job per render.

Model A is the tiny random Llama (tests/tiny.py) on nnsight's local simulation of NDIF (`remote="local"`:
the request serialized as for NDIF, our modules hidden while it is deserialized); model B is the
embedded Gemma 3 270M, run here. The Hidden states page must show A's entries, shapes, the picked
token's vector, every entry's vector lengths and the "how you" demo exactly as core computes them
locally on the same weights, with only those numbers sent back (sized for Llama-3.1-405B on meta).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core import load_model, run_trace, word_vectors_across
from core.loading.load import build_on_meta
from core.model.loaded import LoadedModel
from core.remote.budget import LECTURE_TOKENS, PAGE_BUDGET
from core.remote.context import hidden_page_bytes
from core.remote.model import remote_model
from core.running.context import hidden_state_facts
from core.running.hidden_page import hidden_page
from tests.apptest import assert_clean, run_page
from tests.test_page_remote import remote_facts
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)
from tests.test_remote_lens import counted_jobs

pytestmark = [pytest.mark.app, pytest.mark.embedded]  # model B: the embedded Gemma 3 270M
HIDDEN = "views/running/hidden_states.py"
DEMO = ["how about you?", "how are you?", "nice to meet you"]  # the page's default demo
PROMPT = "how are you?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_folders):
    """A copy of the tiny Llama of this module only: its models are new to the server's model store."""
    return str(shutil.copytree(tiny_folders["llama"], tmp_path_factory.mktemp("remote-pages") / "tiny-llama"))


def test_hidden_page_simulated_is_local(folder, monkeypatch):
    """core.running.hidden_page through the simulation = the local Trace's numbers, in one job."""
    local = load_model(folder, device="cpu")
    lm = remote_model(local, "local")
    jobs = counted_jobs(monkeypatch, lm)
    trace = run_trace(local, PROMPT)
    got = hidden_page(lm, PROMPT, 2, DEMO, ["how", "you"])
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    np.testing.assert_allclose(got.column, trace.hidden_states[:, 2], atol=1e-5)
    facts, expected = got.facts(), hidden_state_facts(trace)
    assert facts[["entry", "what", "shape"]].equals(expected[["entry", "what", "shape"]])
    np.testing.assert_allclose(facts[["mean_norm", "max_norm"]].to_numpy(), expected[["mean_norm", "max_norm"]]
                               .to_numpy(), rtol=1e-5)
    demo = word_vectors_across(local, DEMO, ["how", "you"], n_values=3)
    assert got.demo[["layer", "word", "sentence", "identical", "first_values"]].equals(
        demo[["layer", "word", "sentence", "identical", "first_values"]])
    assert lm.remote.last.bytes_received == hidden_page_bytes(local.num_layers, local.parts.layout.hidden_size,
                                                              len(trace.tokens), [2, 3])
    assert hidden_page(lm, PROMPT, None).column is None and len(jobs) == 2  # no pick: lengths only
    bad = hidden_page(lm, PROMPT, 0, DEMO, ["zebra"])
    assert bad.demo is None and "zebra" in bad.demo_error and len(jobs) == 3


def test_hidden_states_page_runs_a_simulated_model_in_one_job(folder, jobs):
    """A on remote="local", B here: A's metrics, vector, lengths and demo are core's local numbers, ONE job;
    a new layer on the slider sends none (the picked token's whole column came back)."""
    app = run_page(HIDDEN, query={"a": folder, "place_a": "remote", "ndif_a": "local", "hs_prompt": PROMPT})
    assert_clean(app)
    assert not app.error and len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    local = load_model(folder, device="cpu")
    trace = run_trace(local, PROMPT)
    T, H = trace.hidden_states.shape[1:]
    metrics = [(m.label, m.value) for m in app.metric]
    assert metrics[:2] == [("Hidden-state entries", str(local.num_layers + 1)),
                           ("Shape of each entry", f"(1, {T}, {H})")]
    caption = next(c.value for c in app.caption if c.value.startswith("First values of token"))
    position = int(caption.split()[4])
    first = next(f.value for f in app.dataframe if "[0]" in f.value.columns)  # A's column comes first
    np.testing.assert_allclose(first.to_numpy(float)[0], trace.hidden_states[1, position, :8], atol=1e-5)
    facts = next(f.value for f in app.dataframe if "mean_norm" in f.value.columns)
    np.testing.assert_allclose(facts[["mean_norm", "max_norm"]].to_numpy(float),
                               hidden_state_facts(trace)[["mean_norm", "max_norm"]].to_numpy(), rtol=1e-5)
    demo = next(f.value for f in app.dataframe if "identical" in f.value.columns)
    expected = word_vectors_across(local, DEMO, ["how", "you"], n_values=3).query("layer == 1")
    assert demo["first_values"].tolist() == expected["first_values"].tolist()
    assert demo["identical"].tolist() == expected["identical"].tolist()

    app.slider(key=f"hs_layer_A_{local.num_layers + 1}").set_value(0).run()
    assert_clean(app)
    first = next(f.value for f in app.dataframe if "[0]" in f.value.columns)
    np.testing.assert_allclose(first.to_numpy(float)[0], trace.hidden_states[0, position, :8], atol=1e-5)
    assert len(jobs) == 1 and not app.error
    entries = [m.value for m in app.metric if m.label == "Hidden-state entries"]
    assert entries == [str(local.num_layers + 1), "19"]  # B, Gemma 3 270M (18 layers), ran here

    app.text_area(key="hs_sentences").input("how are you?\nwho are you?").run()  # new demo: one more job
    assert_clean(app)
    assert len(jobs) == 2 and not app.error
    app.switch_page("views/home.py").run()
    assert remote_facts(app)["Bytes received"] == f"{hidden_page_bytes(local.num_layers, H, T, [1, 2]):,}"


def test_hidden_page_bytes_405b():
    """Llama-3.1-405B from its config on the meta device: the page's job on the lecture's 12-token prompt
    with the default demo ("how" in 2 sentences, "you" in 3) fits the 64 MB page budget."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, tie_word_embeddings=False)
    model = build_on_meta(config)
    lm = LoadedModel("llama-405b", None, model, None, False, "meta", model.dtype, 0.0)
    size = hidden_page_bytes(lm.num_layers, lm.parts.layout.hidden_size, LECTURE_TOKENS, [2, 3])
    assert 127 * (12 + 6 * 16_384) * 4 <= size <= PAGE_BUDGET
    print(f"Llama-3.1-405B hidden-states page: {size:,} bytes")


# ---------------------------------------------------------------- embedding neighbours (the Embeddings page)


def same_neighbours(got, expected) -> float:
    """Identical ranks, tokens, ids and query attrs; the largest cosine difference (asserted <= 1e-5)."""
    assert list(got.columns) == list(expected.columns) == ["rank", "token", "token_id", "cosine"]
    assert got[["rank", "token", "token_id"]].equals(expected[["rank", "token", "token_id"]])
    assert got.attrs == expected.attrs
    difference = float(np.abs(got["cosine"].to_numpy() - expected["cosine"].to_numpy()).max())
    assert difference <= 1e-5
    return difference


@pytest.mark.parametrize("which", ["tiny", "smollm"])
def test_nearest_tokens_simulated_is_local(folder, monkeypatch, request, which):
    """nearest_tokens and arithmetic through the simulation = the local search (a token, an id, a split word;
    a - b + c with the expected token's rank), ONE job each, k ids and cosines (and the rank) back; the
    model is left as it was (no hooks)."""
    from core.weights.embeddings import arithmetic, nearest_tokens
    from core.remote.embeddings import neighbour_bytes
    from tests.test_remote_lens import hook_state

    local = load_model(folder, device="cpu") if which == "tiny" else request.getfixturevalue("smollm")
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    queries = [("#5", 10), ("apple", 25), ("AirPods", 200)]
    for query, k in queries:
        difference = same_neighbours(nearest_tokens(lm, query, k), nearest_tokens(local, query, k))
        assert lm.remote.last.bytes_received == neighbour_bytes(k)
        print(f"{which} {query!r} k={k}: ids identical, max cosine difference {difference:.1e}, "
              f"{lm.remote.last.bytes_received:,} bytes back")
    assert len(jobs) == len(queries) and all(job.stats.outcome == "completed" for job in jobs)
    ranks = []
    cases = [("king", "man", "woman", "queen"), ("冷", "cold", "small", "小"), ("Paris", "France", "Italy", "#7"),
             ("a", "b", "c", None)]
    for a, b, c, expected in cases:
        rank = expected is not None
        got = arithmetic(lm, a, b, c, 10, expected=expected)
        difference = same_neighbours(got, arithmetic(local, a, b, c, 10, expected=expected))
        asked = rank and got.attrs.get("expected_rank") is not None  # a split expected word has no rank
        ranks.append(got.attrs.get("expected_rank"))
        assert lm.remote.last.bytes_received == neighbour_bytes(10, rank=asked)
        print(f"{which} {a} - {b} + {c}: ids identical, max cosine difference {difference:.1e}, "
              f"expected rank {got.attrs.get('expected_rank')}, {lm.remote.last.bytes_received:,} bytes back")
    assert ranks[-2] is not None and len(jobs) == len(queries) + 4  # one job per arithmetic, the rank included
    assert hook_state(local.model) == hooks


def test_nearest_tokens_bytes_405b():
    """Llama-3.1-405B on the meta device (128,256 x 16,384 table): a query is one job bringing back k ids
    and cosines, the same few kB whatever the table's size; nothing of the table is read here."""
    from transformers import LlamaConfig

    from core.remote.embeddings import neighbour_bytes
    from core.weights.embeddings import MAX_K

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, tie_word_embeddings=False)
    model = build_on_meta(config)
    assert tuple(model.get_input_embeddings().weight.shape) == (128_256, 16_384)
    size = neighbour_bytes(MAX_K)
    assert MAX_K * (8 + 4) < size <= MAX_K * (8 + 4) + 2048 < 128_256 * 4  # (k,) int64 + (k,) fp32; < the norms
    print(f"Llama-3.1-405B nearest tokens at k={MAX_K}: {size:,} bytes (the table: {128_256 * 16_384 * 2:,} bf16)")
