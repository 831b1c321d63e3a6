"""core.running.attention: weights equal the model's own eager attention; summaries equal direct loops."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.running.attention import (attention_weights, head_cells, head_summaries, head_view, hide_first_token,
                            kv_head_of, layer_kinds, summary_table)
from core.running.trace import run_trace

PROMPT = "the apple is green. what color is the apple?"


def eager_attentions(lm, prompt):
    """The model's own attention output, from an independent forward pass: (layers, heads, T, T)."""
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with lm.lock, torch.inference_mode():
        out = lm.model(input_ids=ids, output_attentions=True, use_cache=False)
    return torch.stack(out.attentions)[:, 0].float().numpy()


def random_causal(layers, heads, T, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((layers, heads, T, T)) * 2
    scores[..., np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float16)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_weights_equal_eager_attention(fixture, request):
    lm = request.getfixturevalue(fixture)
    tokens, weights = attention_weights(lm, PROMPT)
    expected = eager_attentions(lm, PROMPT)
    assert weights.shape == expected.shape == (3, 4, len(tokens), len(tokens))
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, atol=2e-3)  # stored in float16
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones(weights.shape[-2:], dtype=bool), k=1)
    assert (weights[..., upper] == 0).all()
    assert tokens[0] == "<bos>"


@pytest.mark.embedded
@pytest.mark.parametrize("fixture, layers, heads, T", [("smollm", 30, 9, 11), ("gemma270m", 18, 4, 12)])
def test_embedded_pair_shapes_and_values(fixture, layers, heads, T, request):
    lm = request.getfixturevalue(fixture)
    tokens, weights = attention_weights(lm, PROMPT)
    assert weights.shape == (layers, heads, T, T) and len(tokens) == T
    np.testing.assert_allclose(weights, eager_attentions(lm, PROMPT), atol=2e-3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (weights[..., np.triu(np.ones((T, T), dtype=bool), k=1)] == 0).all()
    # the attention sink the lecture shows: on average, heads put the most weight on token 0
    summaries = head_summaries(weights)
    assert summaries["first_token_mass"].mean() > 0.4


def test_head_summaries_against_loops():
    attn = random_causal(2, 3, 7)
    got = head_summaries(attn)
    a = attn.astype(np.float64)
    L, H, T, _ = a.shape
    for l in range(L):
        for h in range(H):
            first = prev = ent = dist = 0.0
            for i in range(1, T):
                first += a[l, h, i, 0]
                prev += a[l, h, i, i - 1]
                ent -= sum(a[l, h, i, j] * math.log2(a[l, h, i, j]) for j in range(i + 1) if a[l, h, i, j] > 0)
                dist += sum(a[l, h, i, j] * (i - j) for j in range(i + 1))
            n = T - 1
            assert got["first_token_mass"][l, h] == pytest.approx(first / n, abs=1e-5)
            assert got["previous_token"][l, h] == pytest.approx(prev / n, abs=1e-5)
            assert got["entropy_bits"][l, h] == pytest.approx(ent / n, abs=1e-4)
            assert got["mean_distance"][l, h] == pytest.approx(dist / n, abs=1e-4)


def test_summaries_of_known_heads():
    T = 6
    sink = np.zeros((T, T)); sink[:, 0] = 1  # every token looks at token 0
    previous = np.eye(T, k=-1); previous[0, 0] = 1  # every token looks one back
    uniform = np.tril(np.ones((T, T))); uniform /= uniform.sum(-1, keepdims=True)
    got = head_summaries(np.stack([sink, previous, uniform])[None])
    assert got["first_token_mass"][0].tolist() == pytest.approx([1, 1 / 5, np.mean([1 / (i + 1) for i in range(1, T)])])
    assert got["previous_token"][0].tolist() == pytest.approx([1 / 5, 1, np.mean([1 / (i + 1) for i in range(1, T)])])
    assert got["entropy_bits"][0].tolist() == pytest.approx([0, 0, np.mean([math.log2(i + 1) for i in range(1, T)])])
    assert got["mean_distance"][0].tolist() == pytest.approx([np.mean(range(1, T)), 1, np.mean([i / 2 for i in range(1, T)])])


def test_hide_first_token_renormalises():
    attn = random_causal(1, 2, 5).astype(np.float32)
    got = hide_first_token(attn)
    assert got.shape == (1, 2, 4, 4)
    for h in range(2):
        for i in range(1, 5):
            row = [attn[0, h, i, j] for j in range(1, 5)]
            total = sum(row)
            assert got[0, h, i - 1].tolist() == pytest.approx([x / total for x in row], abs=1e-6)
    cells = head_view(attn, list("abcde"), 0, 1, hide_first=True)
    assert cells["query_pos"].min() == 1 and len(cells) == 16
    cell = cells[(cells.query_pos == 3) & (cells.key_pos == 2)].iloc[0]
    assert cell.weight == pytest.approx(attn[0, 1, 3, 2] / attn[0, 1, 3, 1:].sum(), abs=1e-4)
    assert cell.weight_before_renormalising == pytest.approx(attn[0, 1, 3, 2], abs=1e-3)


def test_head_cells_window_and_future_flags():
    attn = random_causal(1, 1, 6)
    cells = head_view(attn, [f"t{i}" for i in range(6)], 0, 0, start=2, size=3)
    assert sorted(set(cells.query_pos)) == [2, 3, 4] and len(cells) == 9
    assert cells.loc[cells.future, "weight"].eq(0).all()
    assert (cells.future == (cells.key_pos > cells.query_pos)).all()
    assert cells["query"].iloc[0] == "2: t2"
    plain = head_cells(["a", "b"], np.array([[1, 0], [0.25, 0.75]]))
    assert plain.weight.tolist() == [1, 0, 0.25, 0.75]


def test_kv_mapping_matches_repeat_kv(tiny_llama):
    from transformers.models.llama.modeling_llama import repeat_kv

    kv = torch.arange(tiny_llama.num_kv_heads, dtype=torch.float32).view(1, -1, 1, 1)  # KV head k holds k
    expanded = repeat_kv(kv, tiny_llama.num_heads // tiny_llama.num_kv_heads)[0, :, 0, 0]  # value per query head
    assert kv_head_of(tiny_llama).tolist() == expanded.long().tolist() == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def tiny_gemma_mixed(tiny_folders, tmp_path_factory):
    """The tiny Gemma 3 with layers sliding, global, sliding (Gemma 3's 5 local : 1 global, shrunk to 3 layers).

    Same weights as tiny_gemma: only config.json's layer_types changes, which sets each layer's mask.
    """
    from core import load_model

    folder = Path(shutil.copytree(tiny_folders["gemma3"], tmp_path_factory.mktemp("gemma3-mixed") / "model"))
    config = json.loads((folder / "config.json").read_text())
    config["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention"]
    (folder / "config.json").write_text(json.dumps(config))
    return load_model(str(folder))


def test_sliding_layers_do_not_look_past_the_window(tiny_gemma_mixed, tiny_gemma, tiny_llama):
    lm = tiny_gemma_mixed
    window = lm.text_config.sliding_window  # 4 in the tiny model
    assert layer_kinds(lm) == ["sliding", "global", "sliding"]  # read from config.json's layer_types
    assert layer_kinds(tiny_gemma) == ["sliding"] * 3 and layer_kinds(tiny_llama) == ["global"] * 3
    trace = run_trace(lm, PROMPT)
    T = len(trace.tokens)
    assert T > window + 2  # the prompt is longer than the window: there is something beyond it
    distance = np.subtract.outer(np.arange(T), np.arange(T))  # (T, T): how far back key j is from query i
    far, near = distance >= window, (distance >= 0) & (distance < window)
    expected = eager_attentions(lm, PROMPT)  # the model's own forward, independent of core.running.trace
    np.testing.assert_allclose(trace.attentions.astype(np.float32), expected, atol=2e-3)
    for layer, kind in enumerate(layer_kinds(lm)):
        weights = trace.attentions[layer].astype(np.float32)  # (heads, T, T)
        assert (weights[:, near] > 0).all()  # inside the window every layer looks
        if kind == "sliding":
            assert (weights[:, far] == 0).all() and (expected[layer][:, far] == 0).all()
        else:  # a global layer attends beyond the window, in every head and every row that has such keys
            assert (weights[:, far] > 0).all()
            assert (weights[:, far].reshape(weights.shape[0], -1).sum(-1) > 0.1).all()
    table = summary_table(lm, trace)
    assert len(table) == 3 * 4 and table.groupby("layer")["layer_kind"].first().tolist() == layer_kinds(lm)


@pytest.mark.embedded
def test_embedded_layer_kinds_and_kv(gemma270m, smollm):
    kinds = layer_kinds(gemma270m)
    assert len(kinds) == 18 and kinds.count("global") == 3 and kinds[5] == "global"  # 5 local : 1 global
    assert kv_head_of(gemma270m).tolist() == [0, 0, 0, 0]
    assert kv_head_of(smollm).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
