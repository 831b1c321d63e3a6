"""Every architecture family on the hub that the README promises, as a tiny random snapshot folder.

For each family (tests/tiny.py: Llama, Mistral, Qwen2, Qwen3, Phi-3, OLMo-2, Gemma 2, Gemma 3 text and
multimodal, StableLM, Granite, Cohere, GPT-2, GPT-J, GPT-NeoX, OPT-350m's layout, Falcon 40B's and
Falcon-RW's) the core API is checked against the model's own forward pass and against computations
written here independently of core/model/parts.py (the final norm and head are reached by each family's own
attribute path below); then one AppTest opens every page. A state-space model (Mamba: no attention weights) and
a remote-code-only config get plain messages.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from core import (attention_weights, count_parameters, load_model, logit_lens, nearest_tokens, parameter_table,
                  run_trace, similarity_curves, tokenize)
from core.weights.architecture import architecture_facts, component_breakdown
from core.model.hooks import edited_residual
from core.model.errors import ModelLoadError
from core.model.errors import UnsupportedArchitecture
from core.weights.card import model_card
from tests.apptest import assert_clean, page_file, run_page
from tests.tiny import ARCHITECTURES, UNREADABLE, save_remote_code_config, save_tiny

PROMPT = "the apple is green. what color is the apple?"
SENTENCES = ["I ate an apple for breakfast.", "The company that makes iPads is Apple."]

# Where each family keeps its final norm, the projection after it (OPT-350m) and its head, written out
# per family so the lens is checked against something core/model/parts.py did not compute.
OWN_PATHS = {  # kind -> (final norm, project_out, head)
    **{kind: ("model.norm", None, "lm_head") for kind in
       ("llama", "gemma3", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma2", "stablelm", "granite", "cohere")},
    "gptj": ("transformer.ln_f", None, "lm_head"),
    "gemma3-vision": ("model.language_model.norm", None, "lm_head"),
    "gpt2": ("transformer.ln_f", None, "lm_head"),
    "gpt-neox": ("gpt_neox.final_layer_norm", None, "lm_head"),  # transformers 5 renamed embed_out
    "opt": (None, "model.decoder.project_out", "lm_head"),  # post-norm blocks: no final norm
    "falcon": ("transformer.ln_f", None, "lm_head"),
    "falcon-alibi": ("transformer.ln_f", None, "lm_head"),
    "mamba": ("backbone.norm_f", None, "lm_head"),
}
# The attention layout each tiny config was built with (tests/tiny.py): heads, KV heads, head dim, MLP
# width, position scheme. GPT-2, GPT-J and Falcon-RW leave the MLP width unset (4 × 32); Falcon-RW is
# multi-query.
EXPECTED_LAYOUT = {
    **{kind: (4, 2, 8, 64, "rope") for kind in
       ("llama", "gemma3", "gemma3-vision", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma2", "stablelm",
        "granite", "cohere", "falcon")},
    "gptj": (4, 4, 8, 128, "rope"),
    "gpt2": (4, 4, 8, 128, "learned"),
    "gpt-neox": (4, 4, 8, 64, "rope"),
    "opt": (4, 4, 8, 64, "learned"),
    "falcon-alibi": (4, 1, 8, 128, "alibi"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("architectures")
    return {kind: str(save_tiny(kind, root / kind)) for kind in ARCHITECTURES + UNREADABLE}


@pytest.fixture(scope="module")
def models(folders):
    loaded = {}

    def get(kind: str):
        if kind not in loaded:
            loaded[kind] = load_model(folders[kind])
        return loaded[kind]

    return get


def module_at(model: torch.nn.Module, path: str | None):
    if path is None:
        return None
    for name in path.split("."):
        model = getattr(model, name)
    return model


def own_forward(lm, text: str = PROMPT):
    """The model's own forward pass, written here independently of core.running.trace."""
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model(input_ids=ids, output_hidden_states=True, output_attentions=lm.num_heads > 0)
    return ids, out


def independent_logits(lm, kind: str, hidden: torch.Tensor) -> np.ndarray:
    """Final norm, OPT's project_out, head, Granite's scaling, Gemma's soft-capping: each from its own path."""
    norm_path, project_path, head_path = OWN_PATHS[kind]
    x = hidden
    with torch.inference_mode():
        for path in (norm_path, project_path):
            module = module_at(lm.model, path)
            x = module(x) if module is not None else x
        logits = module_at(lm.model, head_path)(x).double()
    config = lm.config.get_text_config()
    if kind == "granite":  # GraniteForCausalLM: logits / logits_scaling
        logits = logits / config.logits_scaling
    if kind == "cohere":  # CohereForCausalLM: logits * logit_scale
        logits = logits * config.logit_scale
    cap = getattr(config, "final_logit_softcapping", None)
    return (cap * torch.tanh(logits / cap) if cap else logits).numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- the core API, per architecture


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_parameters_and_facts(kind, models):
    lm = models(kind)
    unique = {id(p): p.numel() for p in lm.model.parameters()}
    total = count_parameters(lm)
    assert total == sum(unique.values()) == lm.model.num_parameters()
    assert parameter_table(lm)["numel"].sum() == total
    breakdown = component_breakdown(lm)
    assert breakdown["parameters"].sum() == total and "Other" not in set(breakdown["component"])
    assert breakdown.set_index("component").loc["Embedding table", "parameters"] >= lm.model.get_input_embeddings().weight.numel()

    heads, kv, head_dim, width, positions = EXPECTED_LAYOUT[kind]
    assert (lm.num_heads, lm.num_kv_heads, lm.head_dim, lm.parts.layout.mlp_width) == (heads, kv, head_dim, width)
    assert lm.parts.layout.positions == positions and lm.hidden_size == 32
    facts, card = architecture_facts(lm), model_card(lm)
    assert facts["FFN size"] == card["FFN size"] == str(width)
    assert facts["Parameters (total)"].startswith(f"{total:,}") and card["Parameters"].startswith(f"{total:,}")
    assert card["Attention heads / KV heads"] == f"{heads} / {kv}"
    tied = lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    assert card["Tied embeddings"].startswith("yes" if tied else "no")


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_trace_lens_and_attention_match_the_model(kind, models):
    lm = models(kind)
    ids, out = own_forward(lm)
    assert tokenize(lm, PROMPT)["token_id"].tolist() == ids[0].tolist()
    trace = run_trace(lm, PROMPT)
    L, T = lm.num_layers, ids.shape[1]
    assert trace.hidden_states.shape == (L + 1, T, lm.hidden_size)
    assert trace.attentions.shape == (L, lm.num_heads, T, T)
    np.testing.assert_allclose(trace.last_logits, out.logits[0, -1].numpy(), rtol=1e-5, atol=1e-5)
    own_hidden = torch.stack(out.hidden_states[:-1])[:, 0].numpy()  # (L, T, H): the entries before the last
    np.testing.assert_allclose(trace.hidden_states[:-1], own_hidden, rtol=1e-5, atol=1e-5)

    lens = logit_lens(lm, trace, k=3)
    top = lens.set_index(["layer", "position", "rank"])
    own_probs = softmax(out.logits[0].double().numpy())  # (T, V): the model's own last layer
    expected_by_layer = {L: own_probs}
    for layer in range(L):  # the embedding output and every block's output before the last
        hidden = torch.from_numpy(np.array(trace.hidden_states[layer]))  # (T, H)
        expected_by_layer[layer] = softmax(independent_logits(lm, kind, hidden))  # (T, V)
    for layer, expected in expected_by_layer.items():
        for position in range(T):
            row = top.loc[(layer, position, 1)]
            assert row["prob"] == pytest.approx(expected[position].max(), abs=1e-4)
            assert expected[position, int(row["token_id"])] == pytest.approx(expected[position].max(), abs=1e-6)

    tokens, weights = attention_weights(lm, PROMPT)
    assert len(tokens) == T
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    own_attention = torch.stack(out.attentions)[:, 0].numpy()  # (L, heads, T, T): the model's eager weights
    np.testing.assert_allclose(weights, own_attention, atol=2e-3)
    assert np.all(np.triu(weights, k=1) == 0)  # causal


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_embeddings_similarity_and_identity_edit(kind, models):
    lm = models(kind)
    table = nearest_tokens(lm, "apple", k=5)
    ids = table.attrs["query_ids"]
    embed = lm.model.get_input_embeddings().weight.detach().double()
    query = embed[ids].mean(0)
    cosine = (embed @ query) / (embed.norm(dim=1) * query.norm())  # (V,)
    cosine = torch.nan_to_num(cosine, nan=-2.0)  # an all-zero row (the padding token's) has no direction
    assert table["token_id"].tolist()[0] == int(cosine.argmax())
    assert table["cosine"].iloc[0] == pytest.approx(float(cosine.max()), abs=1e-4)

    curves = similarity_curves(lm, SENTENCES, "apple")
    assert len(curves) == lm.num_layers + 1 and curves["cosine"].between(-1 - 1e-6, 1 + 1e-6).all()

    ids = lm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        plain = lm.model(input_ids=ids).logits
    with edited_residual(lm, {lm.num_layers // 2: lambda hidden: hidden}), torch.inference_mode():
        edited = lm.model(input_ids=ids).logits
    assert torch.equal(plain, edited)


@pytest.mark.parametrize("kind", ARCHITECTURES + UNREADABLE)
def test_patchscope_sweep_with_the_shared_prefix_cache_equals_the_whole_prompt_run(kind, models, monkeypatch):
    """Each family's cache (learned / rotary / ALiBi positions, sliding windows, multi-query) continues
    correctly from the target prompt's prefix repeated for every row: the sweep's answers equal the
    same sweep with every row running the whole prompt (core.intervene.patchscopes with the prefix cache off)."""
    import core.intervene.patchscopes as patchscopes

    lm = models(kind)
    trace = run_trace(lm, PROMPT)
    shared = patchscopes.patchscope_from_trace(lm, trace, -1, patchscopes.IDENTITY_PROMPT, max_new_tokens=4)
    monkeypatch.setattr(patchscopes, "prefix_cache", lambda lm, prefix_ids: None)
    whole = patchscopes.patchscope_from_trace(lm, trace, -1, patchscopes.IDENTITY_PROMPT, max_new_tokens=4)
    assert shared["token_ids"].tolist() == whole["token_ids"].tolist()


# ---------------------------------------------------------------- what cannot be read


def test_state_space_model_has_no_attention_but_everything_else(models):
    lm = models("mamba")
    assert lm.num_heads == 0 and lm.parts.layout.positions == "none"
    trace = run_trace(lm, PROMPT)
    assert trace.attentions is None and trace.hidden_states.shape[0] == lm.num_layers + 1
    with pytest.raises(UnsupportedArchitecture, match="has no attention heads"):
        attention_weights(lm, PROMPT)
    ids, out = own_forward(lm)
    lens = logit_lens(lm, trace, k=1)
    last = lens[lens["layer"] == lm.num_layers]["prob"].to_numpy()
    np.testing.assert_allclose(last, softmax(out.logits[0].double().numpy()).max(-1), atol=1e-4)
    middle = independent_logits(lm, "mamba", torch.from_numpy(np.array(trace.hidden_states[1])))
    np.testing.assert_allclose(lens[lens["layer"] == 1]["prob"].to_numpy(), softmax(middle).max(-1), atol=1e-4)
    assert component_breakdown(lm)["parameters"].sum() == count_parameters(lm)
    assert model_card(lm)["Attention heads / KV heads"] == "none (no attention)"


def test_attention_that_returns_no_weights_is_said_plainly(folders, models):
    """The same tiny Llama under PyTorch's fused attention (sdpa), which computes no weights to return."""
    eager = models("llama")
    fused = AutoModelForCausalLM.from_pretrained(folders["llama"], attn_implementation="sdpa").eval()
    lm = dataclasses.replace(eager, model=fused, lock=threading.Lock())
    trace = run_trace(lm, PROMPT)
    assert trace.attentions is None
    np.testing.assert_allclose(trace.hidden_states, run_trace(eager, PROMPT).hidden_states, atol=1e-5)
    with pytest.raises(UnsupportedArchitecture, match="returned no attention weights"):
        attention_weights(lm, PROMPT)
    lens = logit_lens(lm, trace, k=1)
    assert len(lens) == (lm.num_layers + 1) * len(trace.tokens)


def test_remote_code_architecture_is_refused_plainly(tmp_path):
    folder = save_remote_code_config(tmp_path / "custom")
    with pytest.raises(ModelLoadError, match="needs its own Python code.*trust_remote_code"):
        load_model(str(folder))


# ---------------------------------------------------------------- every page, per architecture

PAGES = ["architecture", "vocabulary", "embeddings", "hidden_states", "similarity", "hidden_state_maps", "logit_lens",
         "attention", "next_token", "patchscopes", "steering"]


def page_text(app) -> str:
    tables = " ".join(t.value.to_csv() for t in [*app.table, *app.dataframe])
    return tables + " ".join(str(m.value) for m in [*app.markdown, *app.caption, *app.metric])


@pytest.mark.app
@pytest.mark.parametrize("kind", ARCHITECTURES + UNREADABLE)
def test_every_page(kind, folders, models):
    """Home and each page with this architecture as A and B (one copy in memory): no exception, numbers drawn."""
    lm = models(kind)
    app = run_page(None, {"a": folders[kind], "b": folders[kind]})
    assert_clean(app)
    assert not app.error, [e.value for e in app.error]
    assert f"{count_parameters(lm):,}" in page_text(app)
    for page in PAGES:
        app.switch_page(page_file(page)).run()
        assert_clean(app)
        errors = [e.value for e in app.error]
        if page == "attention" and not lm.num_heads:
            assert errors and all("has no attention heads" in e for e in errors)
            continue
        assert not errors, (page, errors)
        text = page_text(app)
        if page == "architecture":
            assert f"{count_parameters(lm):,}" in text and str(lm.parts.layout.mlp_width or "—") in text
        elif page == "vocabulary":
            assert f"{lm.vocab_size:,}" in text
            # a local folder is titled by its own name, not its whole path (the sidebar keeps the path)
            assert f"Model A: {Path(folders[kind]).name}" in [h.value for h in app.subheader]
        elif page == "hidden_states":
            assert str(lm.num_layers + 1) in [str(m.value) for m in app.metric]
        elif page in ("embeddings", "similarity", "logit_lens"):
            assert app.dataframe or app.get("vega_lite_chart"), page
        elif page == "attention":
            assert app.get("imgs") or app.get("vega_lite_chart")
        elif page == "hidden_state_maps":
            assert len(app.metric) == 4  # silhouette and probe accuracy for A and B
        elif page == "next_token":  # the top-k table of each model: probabilities of real token ids
            tables = [t.value for t in app.dataframe if "prob" in t.value.columns]
            assert len(tables) == 2 and all(t["token_id"].between(0, lm.vocab_size - 1).all() for t in tables)
        elif page == "patchscopes":  # one row per source layer for each model
            tables = [t.value for t in app.dataframe if "layer" in getattr(t.value, "columns", [])]
            assert [len(t) for t in tables[:2]] == [lm.num_layers, lm.num_layers]


@pytest.mark.parametrize("kind", ARCHITECTURES + UNREADABLE)
def test_hidden_state_l_is_the_input_of_block_l(kind, models):
    """core's convention on every family, against the blocks' own inputs (pre-hooks written here): Mamba's
    Hugging Face tuple holds block OUTPUTS with no embedding entry, which once shifted its lens by a layer."""
    lm = models(kind)
    seen = {}

    def keep(layer):
        def hook(module, args, kwargs):
            seen.setdefault(layer, (args[0] if args else kwargs["hidden_states"])[0].clone())
        return hook

    handles = [block.register_forward_pre_hook(keep(l), with_kwargs=True) for l, block in enumerate(lm.parts.layers)]
    try:
        own_forward(lm)
    finally:
        for handle in handles:
            handle.remove()
    trace = run_trace(lm, PROMPT)
    assert sorted(seen) == list(range(lm.num_layers))
    for layer, expected in seen.items():
        np.testing.assert_allclose(trace.hidden_states[layer], expected.float().numpy(), rtol=1e-5, atol=1e-5)
