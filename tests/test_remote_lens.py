"""The logit lens of a remote model: core's own logit_lens / token_trajectory, reduced where the model runs.

One description (issue 18): core.running.lens and core.remote.lens run the same functions
(core.running.lens_reduce), so through nnsight's local simulation of NDIF (`remote="local"`: the
request serialized as for NDIF, our modules hidden while it is deserialized) the lens must give the
local path's token ids and probabilities, on the tiny model of each family and the embedded SmolLM2;
the whole grid is one job and only the top k come back (bytes equal to core.remote.budget's meta
computation); the model is left as it was (no hooks, a plain local run bit for bit the same).
A model on the meta device (remote=URL) runs the lens from the prompt alone, against tests/fake_ndif.py.
The lens page's whole content (core.running.lens_page: tokens, grid, trajectory) is one job and the local numbers.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from core import load_model, logit_lens, run_trace, token_trajectory
from core.remote.budget import LECTURE_TOKENS, LENS_PAGE_BUDGET, lens_page_bytes
from core.remote.lens import prompt_ids
from core.remote.model import remote_model
from core.running import lens
from core.running.lens_page import Follow, lens_page, prompt_tokens
from tests.fake_ndif import FakeNDIF
from tests.test_remote import PROMPT, REPO, SIMULATED, folders, no_ambient_key  # noqa: F401 (fixtures)

pytestmark = pytest.mark.embedded  # test_smollm_grid loads the embedded SmolLM2
KINDS = (*SIMULATED, "mamba")
KEYS = ["layer", "position", "rank", "token", "token_id"]


def hook_state(model: torch.nn.Module):
    """Every hook a module can hold, and nnsight's per-instance forward wrappers (by identity)."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(m._backward_pre_hooks) for m in model.modules())
    glob = torch.nn.modules.module
    hooks += len(glob._global_forward_hooks) + len(glob._global_forward_pre_hooks)
    return hooks, [id(m.__dict__.get("forward")) for m in model.modules()]


def same_lens(got, expected, tolerance: float = 1e-5) -> float:
    """Identical ids, tokens and labels, and the largest probability difference (asserted <= tolerance)."""
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    assert (got[KEYS].to_numpy() == expected[KEYS].to_numpy()).all()
    difference = float(np.abs(got["prob"].to_numpy() - expected["prob"].to_numpy()).max())
    assert difference <= tolerance
    return difference


def trajectories(lm, prompt):
    """token_trajectory at its default (the model's own prediction, last position), a typed word at a middle
    position, and a token id at position 1."""
    return [token_trajectory(lm, prompt), token_trajectory(lm, prompt, target="apple", position=4, after_space=True),
            token_trajectory(lm, prompt, target=7, position=1)]


def same_trajectory(got, expected, tolerance: float = 1e-5) -> None:
    assert list(got.columns) == list(expected.columns)
    assert got.drop(columns="prob").equals(expected.drop(columns="prob"))
    assert np.abs(got["prob"].to_numpy() - expected["prob"].to_numpy()).max() <= tolerance


@pytest.mark.parametrize("kind", KINDS)
def test_simulated_lens_is_the_local_lens(folders, kind, tmp_path):
    """Every (layer, position)'s top 5 and three trajectories, through the simulation = the local path."""
    if kind not in folders:
        from tests.tiny import save_tiny

        folders[kind] = save_tiny(kind, tmp_path / kind)
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, PROMPT)
    expected, paths = logit_lens(local, before, k=5), trajectories(local, PROMPT)
    lm = remote_model(local, "local")  # nnsight wraps this very module
    hooks = hook_state(local.model)  # nnsight's wrappers are installed once, when wrapped
    got = logit_lens(lm, PROMPT, k=5)
    same_lens(got, expected)
    assert lm.remote.last.outcome == "completed"
    tokens = len(before.tokens)
    assert lm.remote.last.bytes_received == lens_page_bytes(local.config, tokens, k=5, trajectory=False)
    assert logit_lens(lm, before, k=5).equals(got)  # a Trace: its token ids, the same job
    for remote_path, local_path in zip(trajectories(lm, PROMPT), paths):
        same_trajectory(remote_path, local_path)
    assert hook_state(local.model) == hooks  # no job left a hook or a wrapper behind
    after = run_trace(local, PROMPT)  # and a plain local run is bit for bit what it was
    assert np.array_equal(before.hidden_states, after.hidden_states)
    assert np.array_equal(before.last_logits, after.last_logits)
    assert logit_lens(local, after, k=5).equals(expected)


@pytest.mark.parametrize("upcast", [False, True])
def test_16_bit_head_follows_the_local_policies(folders, monkeypatch, upcast):
    """A bf16, soft-capped Gemma read in blocks of 7 rows: both head paths give the local numbers exactly,
    because the remote job runs with the block sizes and upcast decisions core.running.lens made here."""
    monkeypatch.setattr(lens, "VOCAB_BLOCK", 7)
    monkeypatch.setattr(lens, "FORCE_UPCAST", upcast)
    local = load_model(str(folders["gemma3"]), device="cpu", dtype=torch.bfloat16)
    assert local.lm_head.weight.dtype == torch.bfloat16 and local.parts.layout.logit_softcap
    expected, path = logit_lens(local, PROMPT, k=4), token_trajectory(local, PROMPT, target=" apple")
    lm = remote_model(local, "local")
    assert same_lens(logit_lens(lm, PROMPT, k=4), expected, tolerance=0.0) == 0.0
    same_trajectory(token_trajectory(lm, PROMPT, target=" apple"), path, tolerance=0.0)


def test_smollm_grid(smollm):
    """The embedded SmolLM2 (30 layers, vocabulary 49,152): the whole grid in one simulated job."""
    trace = run_trace(smollm, PROMPT)
    started = time.perf_counter()
    expected = logit_lens(smollm, trace, k=10)
    local_seconds = time.perf_counter() - started
    path = token_trajectory(smollm, trace, target=" green", position=5)
    lm = remote_model(smollm, "local")
    hooks = hook_state(smollm.model)
    started = time.perf_counter()
    got = logit_lens(lm, PROMPT, k=10)
    remote_seconds = time.perf_counter() - started
    difference = same_lens(got, expected)
    received = lm.remote.last.bytes_received
    assert received == lens_page_bytes(smollm.config, len(trace.tokens), k=10, trajectory=False)
    same_trajectory(token_trajectory(lm, PROMPT, target=" green", position=5), path)
    assert hook_state(smollm.model) == hooks
    assert np.array_equal(run_trace(smollm, PROMPT).hidden_states, trace.hidden_states)
    print(f"SmolLM2 lens grid ({len(trace.tokens)} tokens x 31 entries, top 10): local {local_seconds:.3f} s "
          f"(on a trace), simulated NDIF {remote_seconds:.3f} s (forward included), max |dp| {difference:.1e}, "
          f"{received:,} bytes back")


def test_lens_bytes_405b():
    """Llama-3.1-405B's lens page at the lecture's 12 tokens, top 10, from its config on the meta device."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                         tie_word_embeddings=False)
    grid = lens_page_bytes(config, LECTURE_TOKENS, k=10, trajectory=False)  # logit_lens's job
    page = lens_page_bytes(config, LECTURE_TOKENS, k=10)  # with token_trajectory's ranks and probabilities
    raw = 127 * LECTURE_TOKENS * 10 * (8 + 4)  # int64 ids + fp32 probabilities
    assert raw <= grid < page <= raw + 127 * 12 + 4096 and page <= LENS_PAGE_BUDGET
    print(f"Llama-3.1-405B lens: grid {grid:,} bytes, with the trajectory {page:,} (budget {LENS_PAGE_BUDGET:,})")


def test_meta_model_runs_the_lens_from_the_prompt(folders):
    """remote=URL: the model is on the meta device (no weights, no Trace possible); logit_lens sends the
    prompt's token ids and decodes what comes back (here the fake NDIF's canned values, saved as NDIF would)."""
    meta = load_model(str(folders["llama"]), weights=False)
    entries = meta.num_layers + 1
    tokens = len(prompt_ids(meta, PROMPT))  # what run_trace would run
    ids = torch.arange(entries * tokens * 3).reshape(-1, 3) % meta.vocab_size
    canned = {"lens": {"ids": ids, "probs": torch.full((entries * tokens, 3), 0.25)}}
    with FakeNDIF(["complete"], result=canned, hosted=(REPO,), keys=("k",), max_requests=6, lifetime=20) as server:
        lm = remote_model(meta, server.url, key="k", repo_id=REPO)
        table = logit_lens(lm, PROMPT, k=3)
    assert not lm.has_weights and len(table) == entries * tokens * 3
    assert table["token_id"].tolist() == ids.ravel().tolist()
    assert (table.groupby("layer")["position"].nunique() == tokens).all() and table["layer"].max() == entries - 1
    assert lm.remote.last.outcome == "completed" and 0 < lm.remote.last.bytes_received


def counted_jobs(monkeypatch, lm) -> list:
    """The jobs lm's RemoteModel starts from now on (one per NDIF request)."""
    jobs, new_job = [], lm.remote.new_job

    def counting(*args, **kwargs):
        jobs.append(new_job(*args, **kwargs))
        return jobs[-1]

    monkeypatch.setattr(lm.remote, "new_job", counting)
    return jobs


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_lens_page_is_one_job_with_the_local_numbers(folders, monkeypatch, kind):
    """lens_page through the simulation: the same tokens, grid and trajectories as locally, each page ONE job
    whose bytes are core.remote.budget's (grid and trajectory); a word with no token still gets its grid."""
    local = load_model(str(folders[kind]), device="cpu")
    lm = remote_model(local, "local")
    jobs = counted_jobs(monkeypatch, lm)
    trace = run_trace(local, PROMPT)
    for follow in (Follow(), Follow("apple", 4, True), Follow(7, 1)):
        expected = lens_page(local, trace, k=5, follow=follow)
        before = len(jobs)
        got = lens_page(lm, PROMPT, k=5, follow=follow)
        assert len(jobs) == before + 1 and jobs[-1].stats.outcome == "completed"
        assert got.tokens.tokens == trace.tokens and np.array_equal(got.tokens.offsets, trace.offsets)
        assert np.array_equal(got.tokens.token_ids, trace.token_ids) and got.tokens.truncated == trace.truncated
        same_lens(got.table, expected.table)
        same_trajectory(got.trajectory, expected.trajectory)
        assert expected.table.equals(logit_lens(local, trace, k=5))  # locally: logit_lens's own numbers
        assert lm.remote.last.bytes_received == lens_page_bytes(local.config, len(trace.tokens), k=5)
    assert len(jobs) == 3
    no_token = lens_page(lm, PROMPT, k=3, follow=Follow("", 99))  # a position outside the prompt
    assert no_token.trajectory is None and "outside" in no_token.trajectory_error and len(jobs) == 4
    same_lens(no_token.table, logit_lens(local, trace, k=3))
    tokens = prompt_tokens(lm, PROMPT)  # before any job: the picker's tokens
    assert tokens.tokens == trace.tokens and len(jobs) == 4
