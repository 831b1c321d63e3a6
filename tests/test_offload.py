"""Bigger than memory: accelerate's device map, disk offload, and fit checks before loading.

The offloaded models are the tiny random snapshots; a free-RAM budget (`max_memory`) smaller
than the model forces accelerate to put layers on disk, exactly as a 30 GB model on a 24 GB
machine would. Each result is compared with the same model loaded whole into memory.
"""

import numpy as np
import pytest
import torch

import core.loading.placement
from core import count_parameters, load_model, run_trace
from core.loading.gguf import convert_gguf, converted_gguf_folder, gguf_parameter_count
from core.weights.embeddings import arithmetic, nearest_tokens
from core.running.lens import logit_lens
from core.model.errors import ModelLoadError
from core.loading.placement import GIB, plan_placement

PROMPT = "the apple is green. what color is the apple?"


def _budget_for(folder, fraction):
    """A CPU budget holding the embedding table and `fraction` of the rest: the layers spill to disk."""
    return {"cpu": int(sum(p.stat().st_size for p in folder.glob("*.safetensors")) * fraction)}


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def pair(request, tiny_folders):
    """(in memory, offloaded) loads of the same tiny snapshot."""
    folder = tiny_folders[request.param]
    whole = load_model(str(folder))
    offloaded = load_model(str(folder), max_memory=_budget_for(folder, 0.6))
    return whole, offloaded


def _hooked(lm):
    return [name for name, module in lm.model.named_modules() if getattr(module, "_hf_hook", None) is not None]


def test_disk_offload_gives_the_same_trace_as_in_memory(pair):
    whole, offloaded = pair
    assert whole.plan.bytes_on.keys() == {"cpu"} and not _hooked(whole)
    assert offloaded.plan.bytes_on.get("disk", 0) > 0 and "disk" in offloaded.plan.device_map.values()
    assert _hooked(offloaded)  # accelerate moves the offloaded layers in during the forward pass
    assert any(p.is_meta for p in offloaded.model.parameters())  # really not in memory
    a, b = run_trace(whole, PROMPT), run_trace(offloaded, PROMPT)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_allclose(b.hidden_states, a.hidden_states, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(b.attentions, a.attentions)
    np.testing.assert_allclose(b.last_logits, a.last_logits, rtol=0, atol=1e-6)


def test_lens_and_embeddings_work_on_an_offloaded_model(pair):
    whole, offloaded = pair
    lens_a = logit_lens(whole, run_trace(whole, PROMPT), k=3)
    lens_b = logit_lens(offloaded, run_trace(offloaded, PROMPT), k=3)
    assert lens_a["token_id"].tolist() == lens_b["token_id"].tolist()
    np.testing.assert_allclose(lens_b["prob"], lens_a["prob"], atol=1e-6)
    for query in ("apple", "#5"):
        near_a, near_b = nearest_tokens(whole, query, 8), nearest_tokens(offloaded, query, 8)
        assert near_a["token_id"].tolist() == near_b["token_id"].tolist()
    assert arithmetic(whole, "king", "man", "woman")["token_id"].tolist() == \
        arithmetic(offloaded, "king", "man", "woman")["token_id"].tolist()


def test_every_layer_on_disk_still_runs(tiny_folders):
    """'Offload to disk': nothing but what accelerate must keep stays in memory; embeddings read from disk."""
    whole = load_model(str(tiny_folders["llama"]))
    on_disk = load_model(str(tiny_folders["llama"]), device_map="disk")
    assert set(on_disk.plan.bytes_on) == {"disk"} and on_disk.device == "cpu"
    assert on_disk.plan.total_bytes == whole.plan.total_bytes
    np.testing.assert_allclose(run_trace(on_disk, PROMPT).last_logits, run_trace(whole, PROMPT).last_logits, atol=1e-6)
    assert nearest_tokens(on_disk, "apple", 5)["token_id"].tolist() == nearest_tokens(whole, "apple", 5)["token_id"].tolist()


def test_plan_fills_gpus_then_cpu_then_disk_for_the_real_llama_shape():
    """accelerate's plan for the real Llama-3.2-3B config in bf16 (meta device, no weights needed).

    GPU ids in max_memory need no GPU to plan with: accelerate only reads the budgets.
    """
    meta = load_model("llama-3.2-3b", weights=False)
    expected = sum(t.numel() for t in {id(t): t for t in [*meta.model.parameters(), *meta.model.buffers()]}.values()) * 2
    budgets = {0: 2 * GIB, 1: 2 * GIB, "cpu": 1 * GIB}
    plan = plan_placement(meta.model, torch.bfloat16, "auto", max_memory=budgets, disk_free=100 * GIB)
    assert list(plan.bytes_on) == ["cuda:0", "cuda:1", "cpu", "disk"] and plan.execution_device == "cuda:0"
    assert plan.total_bytes == expected  # every weight placed once (tied head counted once)
    for place, limit in (("cuda:0", 2 * GIB), ("cuda:1", 2 * GIB), ("cpu", GIB)):
        assert 0 < plan.bytes_on[place] <= limit
    layers = [plan.device_map[f"model.layers.{i}"] for i in range(28) if f"model.layers.{i}" in plan.device_map]
    order = {0: 0, 1: 1, "cpu": 2, "disk": 3}
    assert [order[d] for d in layers] == sorted(order[d] for d in layers)  # GPUs first, then CPU, then disk
    text = plan.describe()
    assert "GiB on GPU 0" in text and "on disk" in text and "s extra per prompt" in text
    seconds = plan.bytes_on["disk"] / plan.disk_bytes_per_s + plan.bytes_on["cpu"] / core.loading.placement.TYPICAL_PCIE_BYTES_PER_S
    assert plan.offloaded_seconds_per_forward == pytest.approx(seconds)


def test_cpu_only_refuses_what_auto_offloads(tiny_folders):
    folder = str(tiny_folders["llama"])
    with pytest.raises(ModelLoadError, match="of memory is free in CPU RAM"):
        load_model(folder, device_map="cpu", available_bytes=20_000)
    lm = load_model(folder, available_bytes=20_000)  # auto: spills to disk instead
    assert lm.plan.bytes_on.get("disk", 0) > 0


def test_gpu_only_without_a_gpu_is_a_message(tiny_folders, monkeypatch):
    monkeypatch.setattr(core.loading.placement, "gpu_free_bytes", dict)  # as on this machine: no CUDA device
    monkeypatch.setattr(core.loading.placement, "mps_available", lambda: False)  # and no Apple GPU
    with pytest.raises(ModelLoadError, match="torch sees no GPU on this machine"):
        load_model(str(tiny_folders["llama"]), device_map="gpu")


def test_too_big_even_for_offload_is_refused_before_loading(tiny_folders, monkeypatch):
    # A disk fuller than the model cannot exist on demand here: the free-disk reading is replaced.
    monkeypatch.setattr(core.loading.placement, "free_disk_bytes", lambda folder=None: 1000)
    with pytest.raises(ModelLoadError, match="too big even with offloading") as caught:
        load_model(str(tiny_folders["llama"]), max_memory={"cpu": 1})
    assert "the disk has only 1,000 B free" in str(caught.value)


def _tiny_gguf(path, shapes):
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(300)])  # an array of strings to skip
    for i, shape in enumerate(shapes):
        writer.add_tensor(f"blk.{i}.weight", np.zeros(shape, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_fit_check_runs_before_dequantizing(tmp_path):
    from gguf import GGUFReader

    path = _tiny_gguf(tmp_path / "big.gguf", [(300, 64), (64, 64), (7,)])
    independent = sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors)
    assert gguf_parameter_count(path) == independent == 300 * 64 + 64 * 64 + 7
    with pytest.raises(ModelLoadError, match="needs about .* GiB of RAM") as caught:
        convert_gguf(path, available_bytes=independent * 4 // 2)  # half of the float32 bytes
    assert "converted once to float32" in str(caught.value)
    assert not converted_gguf_folder(path).exists()  # nothing was dequantized or written
    with pytest.raises(ModelLoadError, match="needs about"):
        load_model(str(path), available_bytes=1000)


def test_embedded_gguf_header_counts_match_the_loaded_model(smollm):
    from core.loading.sources import embedded_gguf_path

    assert gguf_parameter_count(embedded_gguf_path("smollm2-135m")) == count_parameters(smollm)


@pytest.mark.app
def test_sidebar_placement_is_in_the_url_and_home_shows_and_frees_the_caches(tiny_folders, tmp_path):
    import shutil

    from tests.apptest import assert_clean, run_page

    folder = str(shutil.copytree(tiny_folders["gemma3"], tmp_path / "gemma3-for-this-test"))  # counts start at 0
    app = run_page(query={"a": folder, "b": folder, "place_b": "disk"})
    assert_clean(app)
    assert list(app.query_params.get_all("place_b")) == ["disk"] if hasattr(app.query_params, "get_all") \
        else "disk" in str(app.query_params["place_b"])
    slot_a, slot_b = app.session_state["_slots"]
    assert slot_a.key.placement == "auto" and slot_b.key.placement == "disk"
    assert slot_a.lm is not slot_b.lm  # the placement is part of the cache key
    captions = [c.value for c in app.sidebar.caption]
    assert any(c.startswith("Model B: Weights: ") and "on disk" in c for c in captions)
    memory = next(t.value for t in app.table if "times loaded" in t.value.columns)
    rows = memory.loc[folder]
    assert sorted(rows["placement"].str.contains("on disk")) == [False, True]
    assert (rows["times loaded"].astype(int) == 1).all()
    traces = next(m.value for m in app.markdown if m.value.startswith("Traces: "))
    assert "budget" in traces
    next(b for b in app.button if b.label == "Unload all models").click().run()
    assert_clean(app)  # the store was emptied; the sidebar's models were loaded again, a second time each
    memory = next(t.value for t in app.table if "times loaded" in t.value.columns)
    assert (memory.loc[folder]["times loaded"].astype(int) == 2).all()
