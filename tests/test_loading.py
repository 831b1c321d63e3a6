"""Loading: every source kind, config-only mode, memory checks, hub errors, refusals.

Fast tier: tiny random models saved as real snapshot folders, and the real
Llama-3.2-3B / Gemma-3-4b configs on the meta device.
"""

import threading

import huggingface_hub
import huggingface_hub.errors as hub_errors
import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForMaskedLM

from core import count_parameters, load_model, parameter_table, run_trace, tokenize
from core.model.errors import ModelLoadError
from core.loading.load import check_fits, pick_dtype

GIB = 1024**3
SECRET = "hf_THIS_IS_A_SECRET_TOKEN_123"


def safetensors_numel(folder) -> int:
    """Independent count: the sizes of the tensors stored in the file (tied weights are stored once)."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            for name in handle.keys():
                total += int(np.prod(handle.get_slice(name).get_shape()))
    return total


@pytest.mark.parametrize("kind, cls", [("llama", "LlamaForCausalLM"), ("gemma3", "Gemma3ForCausalLM"),
                                       ("gemma3-vision", "Gemma3ForConditionalGeneration")])
def test_tiny_folder_loads_with_eager_attention(tiny_folders, kind, cls):
    lm = load_model(str(tiny_folders[kind]))
    assert type(lm.model).__name__ == cls
    assert lm.model.config._attn_implementation == "eager"
    assert lm.dtype == torch.float32 and lm.device == "cpu" and lm.has_weights
    assert count_parameters(lm) == safetensors_numel(tiny_folders[kind])
    assert parameter_table(lm)["numel"].sum() == count_parameters(lm)
    assert lm.num_layers == 3 and lm.num_heads == 4 and lm.num_kv_heads == 2 and lm.head_dim == 8


def test_multimodal_text_stack_sits_under_language_model(tiny_gemma_vision):
    names = parameter_table(tiny_gemma_vision)["name"]
    assert "model.language_model.layers.0.self_attn.q_proj.weight" in set(names)
    assert any(n.startswith("model.vision_tower.") for n in names)
    assert tiny_gemma_vision.decoder is tiny_gemma_vision.model.model.language_model


def test_hub_id_goes_through_snapshot_download(tiny_folders, monkeypatch):
    calls = {}

    def fake_snapshot_download(repo_id, allow_patterns, token):
        calls.update(repo_id=repo_id, patterns=allow_patterns, token=token)
        return str(tiny_folders["llama"])

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    lm = load_model("someone/tiny-llama")
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert calls["repo_id"] == "someone/tiny-llama" and calls["token"] == SECRET
    assert "*.safetensors" in calls["patterns"] and not any("bin" in p for p in calls["patterns"])


def _http_error(cls, status):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/x"))
    return cls(f"{status} error for token {SECRET}", response=response)


@pytest.mark.parametrize("error, expected", [
    (lambda: _http_error(hub_errors.GatedRepoError, 403), "accept the licence at https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct"),
    (lambda: _http_error(hub_errors.HfHubHTTPError, 401), "provide a token"),
    (lambda: _http_error(hub_errors.RepositoryNotFoundError, 404), "No such model"),
    (lambda: hub_errors.OfflineModeIsEnabled("offline"), "Offline"),
    (lambda: ConnectionError("Name or service not known"), "Offline"),
])
def test_hub_errors_become_clear_messages_without_the_token(monkeypatch, error, expected):
    def failing_snapshot_download(*args, **kwargs):
        raise error()

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing_snapshot_download)
    with pytest.raises(ModelLoadError) as caught:
        load_model("llama-3.2-3b", weights=True)
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None  # the hub exception (which may quote the request) is dropped


def test_config_only_real_pair_has_exact_counts():
    llama = load_model("llama-3.2-3b", weights=False)
    gemma = load_model("gemma-3-4b", weights=False)
    assert count_parameters(llama) == 3_212_749_824  # model.num_parameters() of the real checkpoint
    assert count_parameters(gemma) == 4_300_079_472
    assert not llama.has_weights and llama.device == "meta" and llama.tokenizer is None
    assert all(p.is_meta for p in gemma.model.parameters())
    shapes = dict(zip(parameter_table(llama)["name"], parameter_table(llama)["shape"]))
    assert shapes["model.embed_tokens.weight"] == (128256, 3072)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (3072, 3072)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (1024, 3072)
    assert shapes["model.layers.27.mlp.up_proj.weight"] == (8192, 3072)
    assert "lm_head.weight" not in shapes  # tied to the embedding table
    shapes = dict(zip(parameter_table(gemma)["name"], parameter_table(gemma)["shape"]))
    assert shapes["model.language_model.embed_tokens.weight"] == (262208, 2560)
    assert shapes["model.language_model.layers.33.self_attn.q_proj.weight"] == (2048, 2560)
    assert shapes["model.language_model.layers.0.mlp.down_proj.weight"] == (2560, 10240)
    assert llama.num_layers == 28 and gemma.num_layers == 34 and gemma.num_heads == 8


def test_real_pair_fits_24_gib_in_bf16_but_not_fp32():
    llama = count_parameters(load_model("llama-3.2-3b", weights=False))
    gemma = count_parameters(load_model("gemma-3-4b", weights=False))
    assert pick_dtype(llama, "cpu") == torch.bfloat16 and pick_dtype(10**8, "cpu") == torch.float32
    free = 24 * GIB - 1 * GIB  # the OS and the app itself
    used = check_fits(llama, torch.float32, free, "llama")
    assert used == llama * 4
    with pytest.raises(ModelLoadError, match="GiB"):
        check_fits(gemma, torch.float32, free - used, "gemma")
    used = check_fits(llama, torch.bfloat16, free, "llama")
    assert check_fits(gemma, torch.bfloat16, free - used, "gemma") == gemma * 2


def test_a_model_that_does_not_fit_is_refused_before_loading(tiny_folders):
    # One memory only (device_map=None, or "cpu"): refused. "auto" offloads instead (tests/test_offload.py).
    with pytest.raises(ModelLoadError, match="only 0.0 GiB of memory is free"):
        load_model(str(tiny_folders["llama"]), available_bytes=1000, device_map=None)
    with pytest.raises(ModelLoadError, match="of memory is free in CPU RAM"):
        load_model(str(tiny_folders["llama"]), available_bytes=1000, device_map="cpu")


def test_offline_hub_id_with_the_real_hub_client(monkeypatch, tmp_path):
    """No mock: the real huggingface_hub client, an empty cache, and this machine's lack of network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for repo_id in ("Qwen/Qwen2.5-0.5B", "someone/made-up-model-xyz"):
        with pytest.raises(ModelLoadError) as caught:
            load_model(repo_id, weights=False)
        assert str(caught.value).startswith(f"Offline: could not reach the Hugging Face hub for {repo_id}.")
        assert "not a transformers model" not in str(caught.value)


def test_offline_errors_are_not_mistaken_for_a_missing_file():
    """LocalEntryNotFoundError (no connection) subclasses EntryNotFoundError (no such file): order matters."""
    from core.loading.load import hub_error_message

    offline = hub_error_message(hub_errors.LocalEntryNotFoundError("cannot find the snapshot"), "a/b")
    assert offline.startswith("Offline: could not reach the Hugging Face hub for a/b.")
    missing = hub_error_message(_http_error(hub_errors.RemoteEntryNotFoundError, 404), "a/b")
    assert "No such model" in missing or "not a transformers model" in missing


def test_remote_code_and_unknown_architectures_are_plain_messages(tmp_path):
    import json

    for name, config, expected in [
        ("custom", {"model_type": "phi_custom_xyz", "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}},
         "needs its own Python code to run"),
        ("unknown", {"model_type": "brand_new_arch", "architectures": ["BrandNewForCausalLM"]},
         "uses the architecture 'brand_new_arch', which transformers"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelLoadError, match=expected):
            load_model(str(tmp_path / name))


def test_a_model_on_the_meta_device_raises_our_message(tiny_folders):
    """Config only (weights on the meta device, tokenizer present): every analysis says so, none fails on devices."""
    from core.running.attention import attention_weights
    from core.running.context import similarity_curves
    from core.weights.embeddings import arithmetic, nearest_tokens, project_words
    from core.running.lens import logit_lens, token_trajectory

    lm = load_model(str(tiny_folders["llama"]), weights=False)
    assert lm.device == "meta" and lm.tokenizer is not None
    calls = [lambda: run_trace(lm, "the apple"), lambda: logit_lens(lm, "the apple"),
             lambda: token_trajectory(lm, "the apple"), lambda: attention_weights(lm, "the apple"),
             lambda: similarity_curves(lm, ["the apple", "an apple"], "apple"),
             lambda: nearest_tokens(lm, "apple"), lambda: arithmetic(lm, "king", "man", "woman"),
             lambda: project_words(lm, ["apple", "green", "the"])]
    for call in calls:
        with pytest.raises(ModelLoadError, match="loaded from its config only"):
            call()


def test_out_of_memory_halfway_through_a_trace_is_a_message(tiny_folders, monkeypatch):
    """A GPU running out of memory in layer 2 of 3. There is no GPU here, so the layer raises the
    exception torch raises then (torch.OutOfMemoryError) — simulated, on a model loaded for this test only."""
    lm = load_model(str(tiny_folders["llama"]))
    layer = lm.parts.layers[1]
    real_forward = layer.forward

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(layer, "forward", out_of_memory)
    tokens = len(lm.tokenizer("the apple is green")["input_ids"])
    with pytest.raises(ModelLoadError, match=f"ran out of memory on this {tokens}-token prompt"):
        run_trace(lm, "the apple is green")
    monkeypatch.setattr(layer, "forward", real_forward)
    assert not lm.lock.locked()  # the failed pass released the model
    assert run_trace(lm, "the apple is green").hidden_states.shape[0] == 4


def test_local_source_errors(tmp_path, tiny_folders):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_folders["llama"] / "config.json").read_text())
    (no_weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="no .safetensors weights.*pickle"):
        load_model(str(no_weights))
    with pytest.raises(ModelLoadError, match="neither a preset"):
        load_model("not a model id!")


def test_corrupt_safetensors_is_a_clear_error(tmp_path, tiny_folders):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_folders["llama"], corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="corrupt or incomplete"):
        load_model(str(corrupt))


def test_non_causal_model_is_refused(tmp_path):
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not a causal"):
        load_model(str(tmp_path / "bert"))


def test_tokenize_is_exactly_what_the_model_sees(tiny_llama):
    text = "the apple is green. what color is the apple?"
    table = tokenize(tiny_llama, text)
    assert table["token_id"].tolist() == tiny_llama.tokenizer(text)["input_ids"]
    assert table["token"].iloc[0] == "<bos>" and table["position"].tolist() == list(range(len(table)))
    # Offsets cover the text: each non-special token's span decodes back to its characters.
    for _, row in table.iloc[1:].iterrows():
        assert text[row.start:row.end].strip() == row.text.strip()


def test_trace_is_frozen_and_matches_an_independent_forward(tiny_gemma):
    trace = run_trace(tiny_gemma, "the apple is green")
    ids = torch.tensor([tiny_gemma.tokenizer("the apple is green")["input_ids"]], device=tiny_gemma.device)
    with torch.no_grad():
        out = tiny_gemma.model(ids, output_hidden_states=True, output_attentions=True)
    T = ids.shape[1]
    assert trace.hidden_states.shape == (4, T, 32) and trace.attentions.shape == (3, 4, T, T)
    np.testing.assert_allclose(trace.hidden_states[2], out.hidden_states[2][0].cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(trace.last_logits, out.logits[0, -1].cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(trace.attentions.astype(np.float32).sum(-1), 1.0, atol=2e-3)
    assert not trace.hidden_states.flags.writeable
    with pytest.raises(ValueError):
        trace.attentions[0, 0, 0, 0] = 1


def _hooks(model):
    return [(name, fn.__qualname__) for name, m in model.named_modules()
            for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]]


def test_tracing_leaves_the_model_untouched(tiny_llama):
    before = {name: p.detach().clone() for name, p in tiny_llama.model.named_parameters()}
    run_trace(tiny_llama, "how are you?")
    hooks = _hooks(tiny_llama.model)
    run_trace(tiny_llama, "nice to meet you")
    # transformers 5 installs its own output-recording hooks once, on the first call that asks for
    # hidden states; we add none, and nothing accumulates from one trace to the next.
    assert _hooks(tiny_llama.model) == hooks
    assert all("output_capturing_hook" in qualname for _, qualname in hooks)
    for name, param in tiny_llama.model.named_parameters():
        assert torch.equal(param, before[name])
    assert tiny_llama.model.config._attn_implementation == "eager"


def test_concurrent_traces_give_the_single_session_answer(tiny_llama):
    prompts = ["how about you?", "how are you?", "nice to meet you"] * 4
    expected = {p: run_trace(tiny_llama, p).hidden_states for p in set(prompts)}
    results, errors = {}, []

    def worker(i, prompt):
        try:
            results[i] = run_trace(tiny_llama, prompt).hidden_states
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, prompt in enumerate(prompts):
        np.testing.assert_array_equal(results[i], expected[prompt])


def test_empty_prompt_is_a_clear_error(tiny_llama):
    with pytest.raises(ValueError, match="empty"):
        run_trace(tiny_llama, "   ")


def test_the_token_never_reaches_a_log_line(monkeypatch, caplog):
    def gated(*args, **kwargs):
        raise _http_error(hub_errors.GatedRepoError, 403)

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with caplog.at_level("DEBUG"):
        with pytest.raises(ModelLoadError):
            load_model("gemma-3-4b")
    assert SECRET not in caplog.text

