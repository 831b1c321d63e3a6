"""Logit lens: checked against the model's own forward pass and an independent norm + head in NumPy."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core import run_trace
from core.running.lens import first_top1_layer, last_position_table, logit_lens, token_trajectory

PROMPT = "the apple is green. what color is the apple?"


def forward(lm, prompt):
    """The model's own forward pass, written here independently of core.running.trace."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    return out.logits[0].double().numpy(), [h[0].double().numpy() for h in out.hidden_states]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_norm_head(lm, h, normed=False, cap=True):
    """Final RMSNorm + tied LM head + Gemma soft-capping, in float64 NumPy (the papers' formulas).

    `normed`: h already went through the final norm (the last hidden-state entry); `cap=False`
    leaves the soft-cap out.
    """
    norm = lm.decoder.norm
    w = norm.weight.detach().double().numpy()
    eps = getattr(norm, "variance_epsilon", None) or norm.eps
    scale = (1.0 + w) if lm.config.model_type.startswith("gemma") else w  # Gemma stores weight - 1
    x = h if normed else h / np.sqrt((h**2).mean(-1, keepdims=True) + eps) * scale
    logits = x @ lm.lm_head.weight.detach().double().numpy().T
    softcap = getattr(lm.text_config, "final_logit_softcapping", None) if cap else None
    return softcap * np.tanh(logits / softcap) if softcap else logits


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_last_layer_equals_model_logits(name, request):
    lm = request.getfixturevalue(name)
    logits, hidden = forward(lm, PROMPT)
    table = logit_lens(lm, PROMPT, k=5)
    last = table[table["layer"] == len(hidden) - 1]
    probs = softmax(logits)  # (T, V)
    for position in range(logits.shape[0]):
        rows = last[last["position"] == position].sort_values("rank")
        expected = np.argsort(-probs[position])[:5]
        assert rows["token_id"].tolist() == expected.tolist()
        np.testing.assert_allclose(rows["prob"], probs[position, expected], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_middle_layers_match_independent_norm_and_head(name, request):
    lm = request.getfixturevalue(name)
    _, hidden = forward(lm, PROMPT)
    table = logit_lens(lm, PROMPT, k=3, chunk_rows=7)  # small chunks: rows of a layer split across chunks
    for layer in range(len(hidden) - 1):  # every entry except the last gets the final norm
        probs = softmax(numpy_norm_head(lm, hidden[layer]))  # (T, V)
        got = table[(table["layer"] == layer) & (table["rank"] == 1)].sort_values("position")
        np.testing.assert_array_equal(got["token_id"], probs.argmax(-1))
        np.testing.assert_allclose(got["prob"], probs.max(-1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("upcast", [False, True])
def test_vocabulary_blocks_merge_to_the_whole_vocabulary(tiny_folders, monkeypatch, upcast):
    """The head read in blocks of 7 token rows (not dividing the vocabulary), running top-k and
    log-sum-exp merged across them, gives every row's exact top 4 and probabilities; both head
    paths, on a bf16 Gemma (soft-capped) whose every block is decoded the way the model is."""
    from core import load_model
    from core.running import lens

    monkeypatch.setattr(lens, "VOCAB_BLOCK", 7)
    monkeypatch.setattr(lens, "FORCE_UPCAST", upcast)
    lm = load_model(str(tiny_folders["gemma3"]), dtype="bfloat16")
    assert lm.vocab_size % 7 != 0
    trace = run_trace(lm, PROMPT)
    table = logit_lens(lm, trace, k=4, chunk_rows=5)
    head = lm.lm_head.weight.detach().double().numpy()  # (V, H)
    entries, T, _ = trace.hidden_states.shape
    for layer in range(entries):
        normed = layer == entries - 1
        with torch.inference_mode():  # the model's own norm; the head product in float64 here
            x = lm.parts.finish(torch.from_numpy(np.array(trace.hidden_states[layer])).bfloat16(), normed=normed)
        logits = x.double().numpy() @ head.T  # (T, V)
        cap = lm.text_config.final_logit_softcapping
        probs = softmax(cap * np.tanh(logits / cap))
        got = table[table["layer"] == layer].sort_values(["position", "rank"])
        want = np.sort(probs, axis=-1)[:, ::-1][:, :4]  # (T, 4) the exact top-4 probabilities
        np.testing.assert_allclose(got["prob"].to_numpy().reshape(T, 4), want, rtol=2e-2, atol=1e-5)
        chosen = probs[np.arange(T)[:, None], got["token_id"].to_numpy().reshape(T, 4)]
        np.testing.assert_allclose(chosen, want, rtol=2e-2, atol=1e-5)  # the ids carry those probabilities


def test_head_path_follows_the_measured_costs():
    from core.running.lens import HeadCosts, measure_head_costs

    costs = HeadCosts(native=(0.0, 1.0), upcast=(10.0, 0.5))  # upcast: fixed cost, cheaper per row
    assert not costs.upcast_faster(19) and costs.upcast_faster(21)
    measured = measure_head_costs(torch.bfloat16, 64)  # the real probe, on this machine
    assert all(value >= 0 for value in measured.native + measured.upcast)


def test_gemma_softcap_is_applied(tiny_folders, tmp_path):
    """core's lens caps the logits as the model does (cap * tanh(logits / cap)), at every layer.

    The tiny Gemma's raw logits stay below 0.5, where a cap of 30 changes nothing measurable, so
    this copy of it gets a cap of 0.2: below its largest raw logit, so capped and uncapped
    distributions differ clearly and a lens that skipped the cap would fail.
    """
    from core import load_model

    folder = Path(shutil.copytree(tiny_folders["gemma3"], tmp_path / "gemma3-cap"))
    config = json.loads((folder / "config.json").read_text())
    config["final_logit_softcapping"] = 0.2
    (folder / "config.json").write_text(json.dumps(config))
    lm = load_model(str(folder))
    cap = lm.text_config.final_logit_softcapping
    assert cap == 0.2
    logits, hidden = forward(lm, PROMPT)
    assert np.abs(logits).max() <= cap  # the model's own forward applies the cap
    vocab = logits.shape[-1]
    table = logit_lens(lm, PROMPT, k=vocab)  # every token's probability
    for layer, h in enumerate(hidden):
        got = table[table["layer"] == layer].pivot(index="position", columns="token_id", values="prob").to_numpy()
        if layer == len(hidden) - 1:
            capped = softmax(logits)  # the last entry: exactly the model's own (capped) prediction
            raw = softmax(numpy_norm_head(lm, h, normed=True, cap=False))
        else:
            capped = softmax(numpy_norm_head(lm, h))
            raw = softmax(numpy_norm_head(lm, h, cap=False))
        assert np.abs(np.log(capped) - np.log(raw)).max() > 0.05  # the cap matters at this layer...
        np.testing.assert_allclose(got, capped, rtol=1e-4, atol=1e-7)  # ...and core applied it


def test_bf16_model_on_cpu_matches_its_own_logits(tiny_folders):
    """bf16 heads are decoded in fp32 blocks on CPU; the result must still be the model's prediction."""
    from core import load_model

    lm = load_model(str(tiny_folders["llama"]), dtype="bfloat16")
    logits, _ = forward(lm, PROMPT)  # the model's own bf16 forward
    table = logit_lens(lm, PROMPT, k=3)
    last = table[(table["layer"] == lm.num_layers) & (table["rank"] == 1)].sort_values("position")
    np.testing.assert_allclose(last["prob"], softmax(logits).max(-1), rtol=0.02, atol=1e-3)
    agree = (last["token_id"].to_numpy() == logits.argmax(-1)).mean()
    assert agree >= 0.9  # bf16 rounding can swap near-ties


def test_lens_columns_and_shape(tiny_llama):
    trace = run_trace(tiny_llama, PROMPT)
    table = logit_lens(tiny_llama, trace, k=4)
    assert list(table.columns) == ["layer", "position", "rank", "token", "token_id", "prob"]
    entries, T, _ = trace.hidden_states.shape
    assert len(table) == entries * T * 4
    assert table["layer"].min() == 0 and table["layer"].max() == entries - 1
    wide = last_position_table(table)
    assert list(wide.columns) == ["layer", "top 1", "top 2", "top 3", "top 4"] and len(wide) == entries


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma"])
def test_trajectory_rank_and_prob(name, request):
    lm = request.getfixturevalue(name)
    logits, hidden = forward(lm, PROMPT)
    target = int(np.argsort(-logits[-1])[2])  # the model's third choice
    trajectory = token_trajectory(lm, PROMPT, target)
    for layer, h in enumerate(hidden):
        layer_logits = logits[-1] if layer == len(hidden) - 1 else numpy_norm_head(lm, h[-1])
        expected_rank = int((layer_logits > layer_logits[target]).sum()) + 1
        row = trajectory.iloc[layer]
        assert row["rank"] == expected_rank
        assert row["prob"] == pytest.approx(softmax(layer_logits)[target], rel=1e-4, abs=1e-7)
    assert trajectory["rank"].iloc[-1] == 3
    default = token_trajectory(lm, PROMPT)  # default target = the model's own prediction
    assert default["token_id"].iloc[0] == int(logits[-1].argmax()) and default["rank"].iloc[-1] == 1
    first = first_top1_layer(default)
    assert first is not None and (default["rank"].iloc[:first] > 1).all()


def test_trajectory_from_text(tiny_llama):
    trajectory = token_trajectory(tiny_llama, PROMPT, " apple")
    assert trajectory["token_id"].iloc[0] == tiny_llama.tokenizer(" apple", add_special_tokens=False)["input_ids"][0]


@pytest.mark.embedded
@pytest.mark.parametrize("name", ["smollm", "gemma270m"])
def test_embedded_last_layer_equals_trace_logits(name, request):
    lm = request.getfixturevalue(name)
    trace = run_trace(lm, "The capital of France is")
    table = logit_lens(lm, trace, k=5)
    last = table[(table["layer"] == trace.num_layers) & (table["position"] == len(trace.tokens) - 1)]
    expected = np.argsort(-trace.last_logits)[:5]
    assert last.sort_values("rank")["token_id"].tolist() == expected.tolist()
    np.testing.assert_allclose(last.sort_values("rank")["prob"], softmax(trace.last_logits.astype(np.float64))[expected],
                               rtol=1e-4)
    middle = trace.num_layers // 2
    probs = softmax(numpy_norm_head(lm, trace.hidden_states[middle, -1].astype(np.float64)))
    got = table[(table["layer"] == middle) & (table["position"] == len(trace.tokens) - 1) & (table["rank"] == 1)]
    assert got["token_id"].item() == probs.argmax()


def test_an_offloaded_head_is_decoded_in_bounded_row_chunks(tiny_folders, tiny_llama, monkeypatch):
    """A head accelerate offloaded (its weight on meta) returns whole (rows, vocab) logits per call, so
    the lens hands it at most BLOCK_BYTES of logits at a time; a readable head takes ROWS_PER_PASS rows."""
    from types import SimpleNamespace

    from core import load_model
    from core.running import lens

    offloaded = load_model(str(tiny_folders["llama"]), weights=False)  # every weight on meta, as offloaded
    assert offloaded.lm_head.weight.is_meta
    vocab, hidden = offloaded.vocab_size, offloaded.hidden_size
    monkeypatch.setattr(lens, "BLOCK_BYTES", 4 * vocab * 100)  # 100 rows of fp32 logits
    trace = SimpleNamespace(hidden_states=np.zeros((3, 400, hidden), np.float32))  # 1,200 rows
    sizes = [len(layers) for layers, _, x in lens._chunks(offloaded, trace, None)]
    assert sizes == [100] * 12
    sizes = [len(layers) for layers, _, x in lens._chunks(tiny_llama, trace, None)]
    assert sizes == [min(lens.ROWS_PER_PASS, 1200)]
