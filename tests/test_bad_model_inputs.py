"""Bad-input matrix, model side: every bad model choice is a clear message on the page,
the other model keeps working, and nothing is written to disk.

Hub failures are simulated at the hub-client boundary (huggingface_hub.snapshot_download),
because no machine here reaches the hub.
"""

import json
import shutil
import tempfile

import huggingface_hub
import huggingface_hub.errors as hub_errors
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import core.loading.placement
from core.loading.sources import cache_dir
from tests.apptest import assert_clean, run_page

pytestmark = pytest.mark.app
SECRET = "hf_NEVER_SHOW_THIS_TOKEN_42"
B_COUNT = "268,098,176"  # the embedded Gemma 3 270M in slot B


def _raise(error):
    def fake(*args, **kwargs):
        raise error
    return fake


def _http_error(cls, status):
    import httpx2

    return cls(f"{status} Client Error", response=httpx2.Response(status, request=httpx2.Request("GET", "https://hf.co")))


def folder_without_weights(tmp_path, tiny_folders):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny_folders["llama"] / "config.json", folder)
    return str(folder)


def corrupt_folder(tmp_path, tiny_folders):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_folders["llama"], folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:100] + b"\0" * 50 + data[150:3000])
    return str(folder)


def bert_folder(tmp_path, tiny_folders):
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    return str(tmp_path / "bert")


def remote_code_folder(tmp_path, tiny_folders):
    folder = tmp_path / "remote-code"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "my_custom_lm", "architectures": ["MyCustomLM"],
                                                    "auto_map": {"AutoModelForCausalLM": "modeling_my.MyCustomLM"}}))
    return str(folder)


def unknown_architecture_folder(tmp_path, tiny_folders):
    folder = tmp_path / "unknown-architecture"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "brand_new_arch",
                                                    "architectures": ["BrandNewForCausalLM"]}))
    return str(folder)


# case -> (source for model A, how to break the world, expected words on the page)
CASES = {
    "unknown model id": ("nobody/no-such-model", lambda mp: mp.setattr(
        huggingface_hub, "snapshot_download", _raise(_http_error(hub_errors.RepositoryNotFoundError, 404)))
        , "No such model"),
    "gated model without a token": ("llama-3.2-3b", lambda mp: mp.setattr(
        huggingface_hub, "snapshot_download", _raise(_http_error(hub_errors.GatedRepoError, 403))),
        "accept the licence at https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct"),
    "no network": ("Qwen/Qwen2.5-0.5B", lambda mp: mp.setattr(
        huggingface_hub, "snapshot_download", _raise(ConnectionError("no route"))), "Offline"),
    "local folder that does not exist": ("/no/such/folder", None, "does not exist"),
    "folder without weights": (folder_without_weights, None, "no .safetensors weights"),
    "corrupt safetensors file": (corrupt_folder, None, "corrupt or incomplete"),
    "non-causal model (tiny BERT)": (bert_folder, None, "not a causal"),
    "no network (real hub client, empty cache)": ("Qwen/Qwen2.5-0.5B", lambda mp: mp.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", tempfile.mkdtemp(prefix="empty-hub-cache-")),
        "Offline: could not reach the Hugging Face hub for Qwen/Qwen2.5-0.5B"),
    "remote-code-only architecture": (remote_code_folder, None, "needs its own Python code to run"),
    "architecture transformers does not know": (unknown_architecture_folder, None, "which transformers"),
    # Smaller RAM / disk than the model cannot be had on demand here: the free-memory readings are replaced.
    "model that would not fit in memory with 'CPU only'": ("tiny-llama", lambda mp: mp.setattr(
        core.loading.placement, "free_ram_bytes", lambda: 10_000), "of memory is free in CPU RAM"),
    "model too big even for offload": ("tiny-llama", lambda mp: (
        mp.setattr(core.loading.placement, "free_ram_bytes", lambda: 10_000),
        mp.setattr(core.loading.placement, "free_disk_bytes", lambda folder=None: 10_000)), "too big even with offloading"),
}
PLACEMENT = {"model that would not fit in memory with 'CPU only'": "cpu"}


def _snapshot(path):
    return sorted(str(p) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_choice_is_a_message(case, monkeypatch, tmp_path, tiny_folders):
    source, break_world, expected = CASES[case]
    monkeypatch.setenv("HF_TOKEN", SECRET)
    if case == "gated model without a token":
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    run_page(query={"a": "gemma-3-270m"})  # model B is in the server's store before the world breaks
    if break_world:
        break_world(monkeypatch)
    if callable(source):
        source = source(tmp_path, tiny_folders)
    elif source == "tiny-llama":
        source = str(tiny_folders["llama"])
    before_cache, before_tmp = _snapshot(cache_dir() / "converted"), _snapshot(tmp_path)

    app = run_page(query={"a": source, "a_weights": "1", "place_a": PLACEMENT.get(case, "auto")})

    assert_clean(app)
    messages = " ".join(e.value for e in app.error)
    assert expected in messages
    assert SECRET not in messages
    page_text = " ".join(t.value.to_csv() for t in app.table)
    assert B_COUNT in page_text  # model B is still there
    assert _snapshot(cache_dir() / "converted") == before_cache and _snapshot(tmp_path) == before_tmp


def test_same_model_for_a_and_b_is_one_copy():
    app = run_page(query={"a": "gemma-3-270m", "b": "gemma-3-270m"})
    assert_clean(app)
    slot_a, slot_b = app.session_state["_slots"]
    assert slot_a.lm is slot_b.lm  # one model in memory, shown twice
    assert " ".join(t.value.to_csv() for t in app.table).count(B_COUNT) == 2


def test_out_of_memory_halfway_through_a_trace_is_a_message(monkeypatch, tiny_folders):
    """A GPU that runs out of memory in the second of three layers. No GPU exists here, so that layer
    raises what torch raises then (torch.OutOfMemoryError): simulated on CPU, for Llama layers only
    (model B, Gemma 3 270M, is untouched and must keep working)."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    real_forward = LlamaDecoderLayer.forward

    def second_layer_runs_out(self, *args, **kwargs):
        if self.self_attn.layer_idx == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *args, **kwargs)

    query = {"a": str(tiny_folders["llama"]), "hs_prompt": "the apple is green"}
    monkeypatch.setattr(LlamaDecoderLayer, "forward", second_layer_runs_out)
    app = run_page("views/running/hidden_states.py", query=query)
    assert_clean(app)
    assert any("ran out of memory on this" in e.value for e in app.error)
    entries = [m.value for m in app.metric if m.label == "Hidden-state entries"]
    assert entries == ["19"]  # model B: Gemma 3 270M, 18 layers + embeddings
    monkeypatch.setattr(LlamaDecoderLayer, "forward", real_forward)
    app = run_page("views/running/hidden_states.py", query=query)  # the failure was not cached
    assert not any("ran out of memory" in e.value for e in app.error)
    assert sorted(m.value for m in app.metric if m.label == "Hidden-state entries") == ["19", "4"]
