"""Next token and generation of a remote model: core's own functions, each call one job, the local numbers.

Through nnsight's local simulation of NDIF (remote="local": the request serialized as for NDIF, our
modules hidden while it is deserialized) on the tiny model of several families and the embedded
SmolLM2: next_token_table (ids identical, probabilities within 1e-5) and next_token_logits;
generate greedy, sampled with a seed and steered give the local path's token ids exactly (the same
logits processors and steering delta, core.intervene.sampling, run inside the job); every call is ONE
job (RemoteModel.new_job counted); the model is left as it was (no hooks, a plain local run bit for
bit the same). The page: model A simulated shows core's local table. A model on the meta device
(remote=URL) builds the same requests and nnsight's real client sends them to tests/fake_ndif.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core import load_model
from core.intervene.generation import Steer, generate, next_token_logits, next_token_table
from core.remote.model import remote_model
from tests.apptest import assert_clean, run_page
from tests.test_remote import PROMPT, folders, jobs, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import hook_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
import ui  # noqa: E402

KINDS = ("llama", "gemma3", "gpt2", "falcon", "mamba")
PAGE = "views/intervene/next_token.py"


def same_table(got, expected, tolerance: float = 1e-5) -> float:
    """Identical columns, ranks, tokens and ids; the largest probability difference (asserted <= tolerance)."""
    assert list(got.columns) == list(expected.columns) == ["rank", "token", "token_id", "prob"]
    assert got.drop(columns="prob").equals(expected.drop(columns="prob"))
    difference = float(np.abs(got["prob"].to_numpy() - expected["prob"].to_numpy()).max())
    assert difference <= tolerance
    return difference


def steer_of(lm, layer: int) -> Steer:
    vector = np.random.default_rng(layer).standard_normal(lm.hidden_size).astype(np.float32)
    return Steer(layer, vector / np.linalg.norm(vector) * np.sqrt(lm.hidden_size), 4.0)


def check_model(local, jobs, *, tokens: int, prompt: str = PROMPT, chat: bool = False) -> list[float]:
    """Every next-token and generation call, remote vs local; returns the probability differences."""
    settings = [{}, {"temperature": 1.3, "top_p": 0.9, "seed": 7}, {"temperature": 0.8, "seed": 1},
                {"steer": steer_of(local, 1)}, {"steer": steer_of(local, 0), "temperature": 1.0, "seed": 3}]
    tables = [(k, t) for k, t in ((5, 1.0), (3, 0.5), (4, 0.0))]
    expected_tables = [next_token_table(local, prompt, k, t, chat=chat) for k, t in tables]
    expected_logits = next_token_logits(local, prompt, chat=chat)
    expected_ids = [generate(local, prompt, max_new_tokens=tokens, chat=chat, **s).token_ids for s in settings]
    lm = remote_model(local, "local")
    hooks = hook_state(local.model)
    differences = []
    for (k, t), expected in zip(tables, expected_tables):
        differences.append(same_table(next_token_table(lm, prompt, k, t, chat=chat), expected))
        assert len(jobs) == len(differences) and jobs[-1].stats.outcome == "completed"
        assert lm.remote.last.bytes_received < 4096  # only the k + 8 rows came back, not the vocabulary
    np.testing.assert_allclose(next_token_logits(lm, prompt, chat=chat), expected_logits, atol=1e-5)
    for s, expected in zip(settings, expected_ids):
        count = len(jobs)
        streamed = []
        got = generate(lm, prompt, max_new_tokens=tokens, chat=chat, on_token=lambda i, text: streamed.append(i), **s)
        assert got.token_ids == expected, s  # identical ids: greedy, seeded samples, steered
        assert tuple(streamed) == expected  # on_token still sees every token (at once, at the end)
        assert len(jobs) == count + 1  # one job per call
        assert lm.remote.last.bytes_received < 4096  # only the new ids
    assert hook_state(local.model) == hooks  # no job left a hook or a wrapper behind
    assert np.array_equal(next_token_logits(local, prompt, chat=chat), expected_logits)  # bit for bit
    assert generate(local, prompt, max_new_tokens=tokens, chat=chat, **settings[1]).token_ids == expected_ids[1]
    return differences


@pytest.mark.parametrize("kind", KINDS)
def test_simulated_next_token_and_generation_are_the_local_ones(folders, jobs, kind, tmp_path):
    if kind not in folders:
        from tests.tiny import save_tiny

        folders[kind] = save_tiny(kind, tmp_path / kind)
    local = load_model(str(folders[kind]), device="cpu")
    assert max(check_model(local, jobs, tokens=8)) <= 1e-5


@pytest.mark.embedded
def test_smollm(smollm, jobs):
    """The embedded SmolLM2 with its chat template: the same tables and ids, one job per call."""
    assert max(check_model(smollm, jobs, tokens=6, prompt="What is the capital of France?", chat=True)) <= 1e-5


def test_a_remote_model_takes_no_python_edits(folders):
    from core.intervene.generation import generate_ids

    lm = remote_model(load_model(str(folders["llama"]), device="cpu"), "local")
    with pytest.raises(ValueError, match="only a Steer"):
        generate_ids(lm, [1, 2, 3], max_new_tokens=2, edits={0: lambda h: h})


@pytest.mark.app
@pytest.mark.embedded
def test_page_shows_the_simulated_models_next_tokens(folders, jobs, monkeypatch):
    """A on remote="local" (the page in RUNS_REMOTE), B the embedded Gemma here: A's table is core's local one,
    from one job; the page says a remote continuation arrives whole."""
    page_slots = ui.page_slots
    monkeypatch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, runs_remote=True))
    folder, prompt = str(folders["llama"]), "The capital of France is"
    app = run_page(PAGE, query={"a": folder, "place_a": "remote", "ndif_a": "local", "nt_prompt": prompt, "nt_k": "5",
                                "nt_mode": "sampled", "nt_tokens": "6", "nt_seed": "5", "nt_temp": "0.7"})
    assert_clean(app)
    assert not [e.value for e in app.error]
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    shown = app.dataframe[0].value
    local = load_model(folder, device="cpu")
    expected = next_token_table(local, prompt, 5, 1.0)
    assert shown["token_id"].tolist() == expected["token_id"].tolist()
    np.testing.assert_allclose(shown["prob"].to_numpy(float), expected["prob"].to_numpy(float), atol=1e-5)
    assert any("arrives whole" in c.value for c in app.caption)

    next(b for b in app.button if b.label == "Generate").click().run()  # A's continuation: one more job
    assert_clean(app)
    assert len(jobs) == 2 and jobs[1].stats.outcome == "completed"
    text = generate(local, prompt, max_new_tokens=6, temperature=0.7, top_p=0.95, seed=5).text
    assert text and text in [c.value for c in app.code]  # the same seeded sample as core's local path


def test_a_model_on_the_meta_device_generates_through_nnsights_client(folders, jobs):
    """remote=URL: the request (greedy, sampled, steered generation; the top next tokens) is built on the
    meta device, sent by nnsight's real client to a fake NDIF on 127.0.0.1 (the live NDIF cannot be reached
    from here), and its answer decoded: the canned new ids become the text, the canned top-k the table."""
    from tests.fake_ndif import FakeNDIF
    from tests.test_page_remote import KEY, REPO

    meta = load_model(str(folders["llama"]), weights=False)
    new_ids = torch.tensor([5, 9, 2, 7])
    top = {"ids": torch.tensor([4, 8, 3]), "probs": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
           "size": torch.tensor(meta.vocab_size)}
    with FakeNDIF(["complete"], result={"new": new_ids, "result": top}, hosted=(REPO,), keys=(KEY,),
                  max_requests=40) as server:
        lm = remote_model(meta, server.url, key=KEY, repo_id=REPO)
        assert lm.device == "meta" and not lm.has_weights
        for settings in ({}, {"temperature": 1.3, "top_p": 0.9, "seed": 7}, {"steer": steer_of(lm, 1)}):
            got = generate(lm, PROMPT, max_new_tokens=4, **settings)
            assert list(got.token_ids) == new_ids.tolist()
            assert got.text == lm.tokenizer.decode(new_ids.tolist(), skip_special_tokens=True)
        table = next_token_table(lm, PROMPT, k=3)
        assert table["token_id"].tolist() == top["ids"].tolist()
        np.testing.assert_allclose(table["prob"].to_numpy(), top["probs"].numpy(), rtol=1e-6)
    assert len(jobs) == 4 and all(job.stats.outcome == "completed" for job in jobs)
    assert len(server.model_keys) == 4 and lm.remote.last.bytes_received > 0
