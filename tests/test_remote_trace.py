"""run_trace of a remote model (issue 18, "Proof"): the whole Trace in one job, equal to the local one.

Through nnsight's local simulation of NDIF (remote="local": the request serialized as for NDIF, our
modules hidden while it is deserialized) on the tiny model of several families and the embedded
SmolLM2: hidden states, attentions and last logits equal run_trace on the same weights here; one
job; no hooks of ours left. Llama-3.1-405B's whole trace (99.9 MB of hidden states at 12 tokens) is
refused before anything is sent.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import load_model, run_trace
from core.remote.budget import LECTURE_TOKENS, PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.errors import RemoteResultTooLarge
from core.remote.model import remote_model
from core.remote.trace import trace_bytes, trace_job
from tests.test_remote import PROMPT, folders, jobs, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import hook_state

KINDS = ("llama", "gemma3", "gpt2", "opt", "falcon")


def same_trace(got, expected, atol: float = 1e-5) -> float:
    """Identical tokens; arrays within atol; returns the largest difference."""
    assert got.tokens == expected.tokens and np.array_equal(got.token_ids, expected.token_ids)
    assert np.array_equal(got.offsets, expected.offsets) and got.truncated == expected.truncated
    assert got.hidden_states.shape == expected.hidden_states.shape and got.hidden_states.dtype == np.float32
    differences = [np.abs(got.hidden_states - expected.hidden_states).max(),
                   np.abs(got.last_logits - expected.last_logits).max()]
    assert (got.attentions is None) == (expected.attentions is None)
    if expected.attentions is not None:
        assert got.attentions.dtype == np.float16
        differences.append(np.abs(got.attentions.astype(np.float32) - expected.attentions.astype(np.float32)).max())
    assert max(differences) <= atol, differences
    return float(max(differences))


@pytest.mark.parametrize("kind", KINDS)
def test_simulated_trace_is_the_local_one(folders, jobs, kind):
    local = load_model(str(folders[kind]), device="cpu")
    expected = run_trace(local, PROMPT)
    lm = remote_model(local, "local")
    before = hook_state(local.model)  # after nnsight wrapped it (its per-instance forwards are its own)
    got = run_trace(lm, PROMPT)
    same_trace(got, expected)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    layout = local.parts.layout
    assert lm.remote.last.bytes_received <= trace_bytes(local.num_layers, layout.hidden_size, local.num_heads,
                                                        local.vocab_size, len(expected.tokens)) + 1024
    assert hook_state(local.model) == before  # nothing of ours left on the shared module
    again = run_trace(local, PROMPT)  # and a local run after the job is bit for bit the first one
    assert np.array_equal(again.hidden_states, expected.hidden_states)


@pytest.mark.embedded
def test_smollm(smollm, jobs):
    expected = run_trace(smollm, PROMPT)
    got = run_trace(remote_model(smollm, "local"), PROMPT)
    assert same_trace(got, expected, atol=1e-4) <= 1e-4 and len(jobs) == 1


def test_a_whole_405b_trace_is_refused_before_sending(jobs):
    lm = meta_model(llama_405b_config())
    size = trace_bytes(lm.num_layers, lm.parts.layout.hidden_size, lm.num_heads, lm.vocab_size, LECTURE_TOKENS)
    hidden = 127 * LECTURE_TOKENS * 16_384 * 4
    assert hidden <= size <= hidden + 126 * 128 * LECTURE_TOKENS ** 2 * 2 + 128_256 * 4 + 4096
    assert size > PAGE_BUDGET
    with pytest.raises(RemoteResultTooLarge, match="nothing was sent"):
        trace_job(lm, list(range(LECTURE_TOKENS)))
    assert jobs == []  # refused before any job
