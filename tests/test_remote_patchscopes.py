"""Patchscopes on a remote model: core's own patchscope, each sweep ONE job, the local path's ids and texts.

Through nnsight's local simulation of NDIF (remote="local": the request serialized as for NDIF, our
modules hidden while it is deserialized) on the tiny Llama and Gemma 3 and the embedded SmolLM2:
every row's new token ids and text equal the local patchscope's (prefix cache, forward pre-hooks);
a sweep split into several batches is still one job; no hook is left on the model. The tiny models'
random weights are redrawn larger so their answers differ from layer to layer and from the
unpatched prompt: the patch demonstrably acts. Bytes: the ids a sweep of Llama-3.1-405B brings back.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

import core.intervene.patchscopes as patchscopes
from core import load_model, run_trace
from core.intervene.patchscopes import (IDENTITY_PROMPT, generate_rows, patchscope, patchscope_from_trace,
                                        target_tokens, word_position)
from core.remote.budget import LECTURE_TOKENS, PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.jobs import result_bytes
from core.remote.model import remote_model
from core.remote.patchscopes import patchscope_bytes
from tests.apptest import assert_clean, run_page
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host)
from tests.test_remote_lens import hook_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
import ui  # noqa: E402

PAGE = "views/intervene/patchscopes.py"
SOURCE = "Diana, Princess of Wales"
TARGET = "what color is the apple? x"  # the placeholder last: within Gemma 3's sliding window of 4 tokens
SCALE = {"llama": 0.2, "gemma3": 0.05}  # weights drawn at this std: answers that vary with the patch


def sharpened(folder: str, kind: str):
    """The tiny model of `folder` with every matrix redrawn at std SCALE[kind] (seeded)."""
    local = load_model(folder, device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in local.model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * SCALE[kind])
    return local


def same_table(got, expected) -> None:
    assert list(got.columns) == ["layer", "text", "token_ids"]
    assert got["layer"].tolist() == expected["layer"].tolist()
    assert got["token_ids"].tolist() == expected["token_ids"].tolist()  # identical ids
    assert got["text"].tolist() == expected["text"].tolist()


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_simulated_sweep_is_the_local_one_in_one_job(tiny_folders, jobs, monkeypatch, kind):
    local = sharpened(str(tiny_folders[kind]), kind)
    trace = run_trace(local, SOURCE)
    position = word_position(trace, "Wales")
    expected = patchscope(local, SOURCE, position, TARGET, max_new_tokens=6)
    expected_one = patchscope(local, SOURCE, position, TARGET, layers=[2, 0, 1], target_layer=1, max_new_tokens=5)
    _, ids, _ = target_tokens(local, TARGET)
    plain = generate_rows(local, ids, 1, {}, 6)[0]
    assert len(set(expected["token_ids"])) > 1 and any(row != plain for row in expected["token_ids"])  # it acts
    lm = remote_model(local, "local")
    hooks = hook_state(local.model)

    same_table(patchscope(lm, SOURCE, position, TARGET, max_new_tokens=6), expected)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    assert lm.remote.last.bytes_received == patchscope_bytes(local.num_layers, len(ids), 6, patchscopes.MAX_ROWS)
    same_table(patchscope(lm, SOURCE, position, TARGET, layers=[2, 0, 1], target_layer=1, max_new_tokens=5),
               expected_one)  # every source layer into block 1's input
    assert len(jobs) == 2
    monkeypatch.setattr(patchscopes, "MAX_ROWS", 2)  # two generate calls in the session: still one job
    same_table(patchscope_from_trace(lm, trace, position, TARGET, max_new_tokens=6), expected)
    assert len(jobs) == 3 and jobs[2].stats.outcome == "completed"
    assert hook_state(local.model) == hooks  # no job left a hook or a wrapper behind
    monkeypatch.undo()
    same_table(patchscope(local, SOURCE, position, TARGET, max_new_tokens=6), expected)  # the local path as before


def test_remote_checks_before_sending(tiny_folders, jobs):
    lm = remote_model(load_model(str(tiny_folders["llama"]), device="cpu"), "local")
    with pytest.raises(ValueError, match='placeholder "@@" does not appear'):
        patchscope(lm, SOURCE, 1, TARGET, placeholder="@@")
    with pytest.raises(ValueError, match="out of range"):
        patchscope(lm, SOURCE, 99, TARGET)
    assert not jobs  # refused here, from the local tokenizer: nothing was sent


@pytest.mark.embedded
def test_smollm_sweep(smollm, jobs):
    """The embedded SmolLM2 on the identity prompt, a few layers: the same ids and texts, one job."""
    position = word_position(run_trace(smollm, SOURCE), "Wales")
    layers = [0, 3, 9, 20]
    expected = patchscope(smollm, SOURCE, position, IDENTITY_PROMPT, layers=layers, max_new_tokens=5)
    assert "wales" in expected["text"].iloc[0].lower()  # the first layers read the token itself back
    lm = remote_model(smollm, "local")
    hooks = hook_state(smollm.model)
    same_table(patchscope(lm, SOURCE, position, IDENTITY_PROMPT, layers=layers, max_new_tokens=5), expected)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    assert hook_state(smollm.model) == hooks


def test_405b_sweep_bytes_on_meta():
    """Every layer of Llama-3.1-405B at the page's most new tokens, and at core's most: ids only, tiny."""
    lm = meta_model(llama_405b_config())
    assert lm.num_layers == 126
    page, most = (patchscope_bytes(lm.num_layers, LECTURE_TOKENS, new, patchscopes.MAX_ROWS) for new in (40, 200))
    assert (page, most) == (42_397, 203_677)  # the numbers core/remote/patchscopes.py states
    rows = [min(patchscopes.MAX_ROWS, 126 - s) for s in range(0, 126, patchscopes.MAX_ROWS)]
    assert page == result_bytes({"patchscopes": [torch.zeros(r, 40, dtype=torch.long) for r in rows]})
    assert 126 * 40 * 8 < page < 126 * 40 * 8 + 4096  # the int64 ids and a little pickle
    assert most < 126 * 200 * 8 + 4096 < PAGE_BUDGET


@pytest.mark.app
@pytest.mark.embedded
def test_page_shows_the_simulated_models_sweep(tiny_folders, jobs, tmp_path):
    """A on remote="local" (the page in RUNS_REMOTE), B the embedded Gemma here: A's table is core's local one,
    from one job; a rerun (a new number of tokens) is one job more."""
    folder = str(shutil.copytree(tiny_folders["llama"], tmp_path / "tiny-llama"))  # new to the model store
    query = {"a": folder, "place_a": "remote", "ndif_a": "local", "ps_tokens": "4", "ps_target_kind": "identity"}
    app = run_page(PAGE, query=query)
    assert_clean(app)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    shown = [frame.value for frame in app.dataframe if "answer" in frame.value.columns]
    local = load_model(folder, device="cpu")
    trace = run_trace(local, SOURCE)
    expected = patchscope(local, SOURCE, word_position(trace, "Wales"), IDENTITY_PROMPT, max_new_tokens=4)
    assert shown[0]["layer"].tolist() == expected["layer"].tolist() == list(range(local.num_layers))
    assert shown[0]["text"].tolist() == expected["text"].tolist()
    assert not [e.value for e in app.error]
    assert any("only the new token ids come back" in c.value for c in app.caption)

    app.number_input(key="ps_tokens").set_value(5).run()  # a new sweep: one job more
    assert_clean(app)
    assert len(jobs) == 2 and jobs[1].stats.outcome == "completed"
    shown = [frame.value for frame in app.dataframe if "answer" in frame.value.columns]
    expected = patchscope(local, SOURCE, word_position(trace, "Wales"), IDENTITY_PROMPT, max_new_tokens=5)
    assert shown[0]["text"].tolist() == expected["text"].tolist()


def test_a_model_on_the_meta_device_sends_the_sweep_through_nnsights_client(tiny_folders, jobs):
    """remote=URL: the sweep's request is built on the meta device and sent by nnsight's real client to a fake
    NDIF on 127.0.0.1 (the live NDIF cannot be reached from here); its canned ids become the table, row by row."""
    from tests.fake_ndif import FakeNDIF
    from tests.test_page_remote import KEY, REPO

    meta = load_model(str(tiny_folders["llama"]), weights=False)
    eos = meta.model.generation_config.eos_token_id
    canned = [torch.tensor([[5, 9, 2], [7, eos, 4], [3, 8, 6]])]  # (rows, new): one batch, one row per layer
    with FakeNDIF(["complete"], result={"result": canned}, hosted=(REPO,), keys=(KEY,), max_requests=20) as server:
        lm = remote_model(meta, server.url, key=KEY, repo_id=REPO)
        assert lm.device == "meta" and not lm.has_weights
        table = patchscope(lm, SOURCE, 3, TARGET, max_new_tokens=3)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed" and len(server.model_keys) == 1
    assert table["layer"].tolist() == [0, 1, 2]
    rows = [(5, 9, 2), (7, eos), (3, 8, 6)]  # the second row cut after its EOS, with the local generation config
    assert table["token_ids"].tolist() == rows
    assert table["text"].tolist() == [meta.tokenizer.decode(list(row), skip_special_tokens=True) for row in rows]
