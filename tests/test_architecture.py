"""core.weights.architecture: counts by component, real-config shapes, aligned layers, bounded weight views."""

import numpy as np
import pytest
import torch

from core import load_model
from core.weights.architecture import (STATS_SAMPLE, aligned_layer, architecture_facts, component_breakdown, find_tensor,
                               get_tensor, parameter_list, resolve_layer, weight_view)
from core.model.loaded import LoadedModel


@pytest.fixture(scope="module")
def llama3b():
    return load_model("llama-3.2-3b", weights=False)


@pytest.fixture(scope="module")
def gemma4b():
    return load_model("gemma-3-4b", weights=False)


def unique_total(model: torch.nn.Module) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def shape_of(table, name: str) -> str:
    return table.loc[table["name"] == name, "shape"].item()


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize("fixture", ["llama3b", "gemma4b", "tiny_llama", "tiny_gemma_vision"])
def test_components_sum_to_the_total(fixture, request):
    lm = request.getfixturevalue(fixture)
    breakdown = component_breakdown(lm)
    assert breakdown["parameters"].sum() == unique_total(lm.model)
    assert breakdown["share"].sum() == pytest.approx(1.0)
    assert "Other" not in set(breakdown["component"])  # every tensor has a role


def test_llama_components_match_the_config(llama3b):
    parts = component_breakdown(llama3b).set_index("component")["parameters"]
    layers, hidden, ffn = 28, 3072, 8192
    assert parts["Embedding table"] == 128256 * hidden
    assert parts["Attention q"] == layers * hidden * hidden
    assert parts["Attention k"] == parts["Attention v"] == layers * 1024 * hidden
    assert parts["MLP up"] == parts["MLP gate"] == parts["MLP down"] == layers * ffn * hidden
    assert parts["Norms"] == (2 * layers + 1) * hidden
    assert "LM head (untied)" not in parts  # tied: the lecture finds no separate unembedding
    assert unique_total(llama3b.model) == 3_212_749_824  # "32 億多"


def test_gemma_vision_tower_and_projector(gemma4b):
    parts = component_breakdown(gemma4b).set_index("component")["parameters"]
    named = dict(gemma4b.model.named_parameters())
    assert parts["Vision tower"] == sum(p.numel() for n, p in named.items() if "vision_tower" in n)
    assert parts["Projector"] == sum(p.numel() for n, p in named.items() if "multi_modal_projector" in n)
    assert parts["Embedding table"] == 262208 * 2560
    assert round(unique_total(gemma4b.model) / 1e9, 1) == 4.3  # "43 億"


def test_untied_lm_head_gets_its_own_component():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    lm = LoadedModel("untied", None, model, None, False, "meta", torch.float32, 0.0)
    parts = component_breakdown(lm).set_index("component")["parameters"]
    assert parts["LM head (untied)"] == 50 * 16
    assert parts["Embedding table"] == 50 * 16
    assert parts.sum() == unique_total(model)


# ---------------------------------------------------------------- shapes from the lecture


def test_llama_real_shapes(llama3b):
    table = parameter_list(llama3b, one_layer=True)
    layer = "model.layers.0."
    assert shape_of(table, "model.embed_tokens.weight") == "128,256 × 3,072"
    assert shape_of(table, layer + "self_attn.q_proj.weight") == "3,072 × 3,072"
    assert shape_of(table, layer + "self_attn.k_proj.weight") == "1,024 × 3,072"
    assert shape_of(table, layer + "self_attn.v_proj.weight") == "1,024 × 3,072"
    assert shape_of(table, layer + "mlp.up_proj.weight") == "8,192 × 3,072"
    assert shape_of(table, layer + "mlp.down_proj.weight") == "3,072 × 8,192"
    assert set(table.loc[table["name"].str.startswith(layer), "layers"]) == {28}
    assert not table["name"].str.contains("layers.1.").any()
    assert len(parameter_list(llama3b)) == 1 + 28 * 9 + 1  # embedding, 9 tensors per layer, final norm


def test_gemma_real_shapes(gemma4b):
    table = parameter_list(gemma4b, one_layer=True)
    layer = "model.language_model.layers.0."
    assert shape_of(table, "model.language_model.embed_tokens.weight") == "262,208 × 2,560"
    assert shape_of(table, layer + "self_attn.q_proj.weight") == "2,048 × 2,560"
    assert shape_of(table, layer + "self_attn.k_proj.weight") == "1,024 × 2,560"
    assert shape_of(table, layer + "self_attn.v_proj.weight") == "1,024 × 2,560"
    assert shape_of(table, layer + "mlp.up_proj.weight") == "10,240 × 2,560"
    assert shape_of(table, layer + "mlp.down_proj.weight") == "2,560 × 10,240"
    assert set(table.loc[table["name"].str.startswith(layer), "layers"]) == {34}
    vision = table[table["component"] == "Vision tower"]
    assert len(vision) > 0 and vision["name"].str.startswith("model.vision_tower.").all()


def test_parameter_search(gemma4b):
    found = parameter_list(gemma4b, one_layer=False, search="Q_PROJ")
    assert len(found) == 34 + 27 * 2  # text layers + vision layers (weight and bias), case-insensitive
    assert parameter_list(gemma4b, search="no such tensor").empty


def test_facts(llama3b, gemma4b):
    llama, gemma = architecture_facts(llama3b), architecture_facts(gemma4b)
    assert list(llama) == list(gemma)  # same labels: the A/B table aligns
    assert llama["Layers"] == "28" and gemma["Layers"] == "34"
    assert llama["GQA group size"].startswith("3 query heads") and gemma["GQA group size"].startswith("2 query heads")
    assert llama["Activation"] == "silu" and gemma["Activation"] == "gelu_pytorch_tanh"
    assert llama["Norm"].startswith("RMSNorm")
    assert "500,000" in llama["Positions"] and "llama3 scaling ×32" in llama["Positions"]
    assert "1,000,000" in gemma["Positions"] and "10,000" in gemma["Positions"]
    assert "global layers 5, 11, 17, 23, 29" in gemma["Attention layer pattern"]
    assert "29 sliding-window layers (window 1,024" in gemma["Attention layer pattern"]
    assert gemma["… vision tower"].startswith("416,866,032")


def test_aligned_layer_matches_roles(llama3b, gemma4b):
    aligned = aligned_layer(llama3b, gemma4b, 0).set_index("role")
    assert aligned.loc["Attention q (weight)", "A shape (out, in)"] == "3,072 × 3,072"
    assert aligned.loc["Attention q (weight)", "B shape (out, in)"] == "2,048 × 2,560"
    assert aligned.loc["Attention k (weight)", "B tensor"] == "self_attn.k_proj.weight"
    assert aligned.loc["MLP down (weight)", "B shape (out, in)"] == "2,560 × 10,240"
    assert aligned.loc["Norm: self_attn.q_norm.weight", "A tensor"] == ""  # Llama has no q/k norms
    assert len(aligned) == 13  # 7 projections + 2 shared norms + Gemma's 4 extra norms


def test_layer_choice_is_clamped_per_model(llama3b, gemma4b):
    assert resolve_layer(llama3b, "last") == 27 and resolve_layer(gemma4b, "last") == 33
    assert resolve_layer(llama3b, "30") == 27 and resolve_layer(gemma4b, "30") == 30
    assert find_tensor(llama3b, "MLP up", 27) == "model.layers.27.mlp.up_proj.weight"
    assert find_tensor(gemma4b, "Embedding table", 3) == "model.language_model.embed_tokens.weight"
    assert find_tensor(llama3b, "LM head (untied)", 0) is None
    with pytest.raises(ValueError, match="not a layer"):
        resolve_layer(llama3b, "top")


# ---------------------------------------------------------------- weight views


def test_config_only_has_no_values(llama3b):
    with pytest.raises(ValueError, match="config only"):
        weight_view(llama3b, "model.layers.27.mlp.up_proj.weight")


def test_unknown_tensor_is_a_message(tiny_llama):
    with pytest.raises(ValueError, match="has no tensor called 'model.layers.99.q'"):
        get_tensor(tiny_llama, "model.layers.99.q")
    with pytest.raises(ValueError, match="Did you mean"):
        get_tensor(tiny_llama, "up_proj")


def test_small_tensor_view_is_exact(tiny_llama):
    name = "model.layers.2.mlp.up_proj.weight"
    w = dict(tiny_llama.model.named_parameters())[name].detach().numpy()  # (64, 32)
    view = weight_view(tiny_llama, name, block=10, max_side=16)
    np.testing.assert_array_equal(view.block, w[:10, :10])
    assert (view.row_step, view.col_step) == (4, 2)
    np.testing.assert_array_equal(view.sample, w[::4, ::2])
    assert view.exact
    assert view.stats["mean"] == pytest.approx(float(w.mean()), abs=1e-7)
    assert view.stats["std"] == pytest.approx(float(w.std()), rel=1e-5)
    assert (view.stats["min"], view.stats["max"]) == (float(w.min()), float(w.max()))
    assert view.hist_counts.sum() == w.size


def test_vector_and_conv_tensors(tiny_gemma_vision):
    norm = weight_view(tiny_gemma_vision, "model.language_model.norm.weight")
    assert norm.block.shape == (1, 32)
    conv = weight_view(tiny_gemma_vision, "model.vision_tower.embeddings.patch_embedding.weight")
    assert conv.shape == (16, 3, 14, 14) and conv.block.shape == (16, 100)


@pytest.mark.embedded
def test_huge_embedding_view_is_bounded(gemma270m):
    name = "model.embed_tokens.weight"
    w = dict(gemma270m.model.named_parameters())[name]  # (262144, 640)
    view = weight_view(gemma270m, name)
    assert view.sample.shape == (128, 128) and view.row_step == 2048 and view.col_step == 5
    np.testing.assert_array_equal(view.sample, w[::2048, ::5].numpy())
    np.testing.assert_array_equal(view.block, w[:100, :100].numpy())
    assert not view.exact and view.stats["values_used"] == STATS_SAMPLE
    assert view.stats["values_total"] == 262144 * 640
    # The sample's statistics estimate the full tensor's (computed here over all 168 M values).
    assert view.stats["std"] == pytest.approx(w.std().item(), rel=0.02)
    assert abs(view.stats["mean"] - w.mean().item()) < 3 * w.std().item() / STATS_SAMPLE**0.5
