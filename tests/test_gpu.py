"""GPU tier (`pytest -m gpu`): every core function on cuda gives the CPU's numbers, within the dtype's tolerance.

Skipped only where torch sees no CUDA device. Models: the tiny random snapshots (fp32), the embedded
pair (fp32), and random-weight models with the real Llama-3.2-3B / Gemma-3-4b text shapes (bf16, full
vocabulary and width, 2 layers so that a CPU reference stays quick). Each model is loaded twice, on the
CPU (`device="cpu"`) and with the default placement (`device_map="auto"`: cuda:0 on a GPU machine), and
every analysis is run on both. Tolerances: fp32 matmuls on a GPU differ from the CPU's in summation order
(~1e-6 relative); bf16 rounds every layer's output to 8 bits of mantissa, so two layers drift by ~1e-2.
The pages run under AppTest with the models on cuda; a real out-of-memory error is provoked by capping
the process's share of GPU memory.

Without CUDA these are the only skips. The rehearsal tests at the end run the same comparison and page
sweep on the CPU, against copies that accelerate dispatched to disk, so this module's own code runs in
every CI run.
"""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core import (activation_patching, block_contributions, load_model, run_trace, token_attribution,
                  what_blocks_read)
from core.weights.architecture import weight_view
from core.running.attention import summary_table
from core.running.context import similarity_curves, word_vectors_across
from core.weights.embeddings import arithmetic, nearest_tokens, project_words
from core.intervene.generation import next_token_logits
from core.running.lens import logit_lens, token_trajectory
from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError
from core.weights.params import parameter_table
from core.loading.sources import CONFIG_DIR, Source
from core.intervene.steering import steering_vector
from core.weights.vocabulary import embedding_row

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU tier needs a CUDA device")

PROMPT = "the apple is green. what color is the apple?"
SENTENCES = ["I ate an apple for breakfast.", "The company that makes iPads is Apple."]
# (max relative error of a vector, max absolute error of a probability) per dtype
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 3e-2)}


def relative_error(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-12))


def compare_everything(cpu: LoadedModel, gpu: LoadedModel) -> None:
    """Run every core analysis on both models and compare the numbers (also usable with two CPU models)."""
    rel, prob = TOLERANCE[cpu.dtype]
    tc, tg = run_trace(cpu, PROMPT), run_trace(gpu, PROMPT)
    assert tc.token_ids.tolist() == tg.token_ids.tolist()
    for layer in range(tc.hidden_states.shape[0]):
        assert relative_error(tg.hidden_states[layer], tc.hidden_states[layer]) < rel, layer
    np.testing.assert_allclose(tg.attentions.astype(np.float32), tc.attentions.astype(np.float32), atol=prob)
    assert relative_error(tg.last_logits, tc.last_logits) < rel
    # Lens: per row, the top-k probabilities (sorted values stay close even where near-ties swap tokens).
    lc, lg = logit_lens(cpu, tc, k=3), logit_lens(gpu, tg, k=3)
    np.testing.assert_allclose(lg["prob"].to_numpy(), lc["prob"].to_numpy(), atol=prob)
    target = int(np.argmax(tc.last_logits))
    np.testing.assert_allclose(token_trajectory(gpu, tg, target)["prob"], token_trajectory(cpu, tc, target)["prob"],
                               atol=prob)
    assert relative_error(next_token_logits(gpu, PROMPT), next_token_logits(cpu, PROMPT)) < rel
    # Embeddings: the same table on both devices, so cosines agree to fp32 rounding.
    for query in ("apple", "#3"):
        np.testing.assert_allclose(nearest_tokens(gpu, query, 10)["cosine"], nearest_tokens(cpu, query, 10)["cosine"],
                                   atol=1e-4)
    np.testing.assert_allclose(arithmetic(gpu, "king", "man", "woman")["cosine"],
                               arithmetic(cpu, "king", "man", "woman")["cosine"], atol=1e-4)
    words = ["apple", "green", "color", "the", "what"]
    pc, pg = project_words(cpu, words), project_words(gpu, words)
    np.testing.assert_allclose(pg[["x", "y"]].to_numpy(), pc[["x", "y"]].to_numpy(), atol=1e-4)
    np.testing.assert_array_equal(embedding_row(gpu, 3)["values"], embedding_row(cpu, 3)["values"])
    name = parameter_table(cpu)["name"].iloc[1]
    np.testing.assert_array_equal(weight_view(gpu, name).block, weight_view(cpu, name).block)
    # Analyses of traces: attention summaries, similarity across sentences, word vectors.
    sc, sg = summary_table(cpu, tc), summary_table(gpu, tg)
    numeric = sc.select_dtypes("number").columns
    np.testing.assert_allclose(sg[numeric].to_numpy(float), sc[numeric].to_numpy(float), atol=max(prob, 1e-3) * 10)
    cc, cg = similarity_curves(cpu, SENTENCES, "apple"), similarity_curves(gpu, SENTENCES, "apple")
    numeric = cc.select_dtypes("number").columns
    np.testing.assert_allclose(cg[numeric].to_numpy(float), cc[numeric].to_numpy(float), atol=rel * 10)
    wc = word_vectors_across(cpu, SENTENCES, ["apple"], n_values=3)
    wg = word_vectors_across(gpu, SENTENCES, ["apple"], n_values=3)
    assert wc.shape == wg.shape
    vc = steering_vector(cpu, ["the apple is green"], ["the apple is red"], layer=1)
    vg = steering_vector(gpu, ["the apple is green"], ["the apple is red"], layer=1)
    assert relative_error(vg, vc) < rel * 10  # a difference of two nearly equal states amplifies rounding
    compare_causes(cpu, gpu)


CLEAN, CORRUPTED = "nice to meet you, how are you?", "nice to meet apple, how are you?"  # one token apart


def compare_causes(cpu: LoadedModel, gpu: LoadedModel) -> None:
    """The causal analyses (core/cause/) on both models: grids, token scores, block effects."""
    rel, _ = TOLERANCE[cpu.dtype]
    for site in ("resid", "attn", "mlp"):
        for method in ("exact", "attribution"):
            grids = [activation_patching(lm, CLEAN, CORRUPTED, answer="?", foil=".", site=site, method=method)
                     for lm in (cpu, gpu)]
            assert relative_error(grids[1]["score"], grids[0]["score"]) < rel * 10, (site, method)
    for method in ("occlusion", "grad_x_input"):
        scores = [token_attribution(lm, PROMPT, target="?", method=method)["score"] for lm in (cpu, gpu)]
        np.testing.assert_allclose(scores[1], scores[0], atol=rel * 10)
    effects = [block_contributions(lm, PROMPT, target="?") for lm in (cpu, gpu)]
    assert effects[1].attrs["logit"] == pytest.approx(effects[0].attrs["logit"], rel=rel * 10, abs=rel * 10)
    assert relative_error(effects[1]["logit_effect"].fillna(0), effects[0]["logit_effect"].fillna(0)) < rel * 10
    reads = what_blocks_read(gpu, CLEAN, CORRUPTED)
    assert (reads[reads.block == "mlp"]["held_output_change"] == 0).all()


def _on_gpu(lm: LoadedModel) -> bool:
    return lm.device.startswith("cuda") and all(p.device.type == "cuda" for p in lm.model.parameters())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["llama", "gemma3", "gemma3-vision"])
def test_tiny_models_on_cuda_equal_the_cpu(tiny_folders, kind):
    cpu, gpu = load_model(str(tiny_folders[kind]), device="cpu"), load_model(str(tiny_folders[kind]))
    assert cpu.device == "cpu" and _on_gpu(gpu) and gpu.plan.execution_device == "cuda:0"
    compare_everything(cpu, gpu)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m"])
def test_embedded_pair_on_cuda_equals_the_cpu(name):
    cpu, gpu = load_model(name, device="cpu"), load_model(name)
    assert _on_gpu(gpu)
    compare_everything(cpu, gpu)


def random_real_shape(preset: str, layers: int = 2) -> LoadedModel:
    """Random weights (seeded) with the real text config of `preset`, cut to `layers` layers, bf16, on the CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny import tiny_tokenizer

    text = AutoConfig.from_pretrained(CONFIG_DIR / f"{preset}.json").get_text_config()
    text.num_hidden_layers = layers
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:layers]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(text, attn_implementation="eager").to(torch.bfloat16).eval()
    model.requires_grad_(False)
    return LoadedModel(f"{preset} (random, {layers} layers)", Source(preset, "folder", preset), model,
                       tiny_tokenizer(), True, "cpu", torch.bfloat16, 0.0)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("preset", ["llama-3.2-3b", "gemma-3-4b"])
def test_real_shapes_in_bf16_on_cuda_equal_the_cpu(preset):
    cpu = random_real_shape(preset)
    gpu_model = copy.deepcopy(cpu.model).to("cuda:0")
    gpu = LoadedModel(cpu.name, cpu.source, gpu_model, cpu.tokenizer, True, "cuda:0", torch.bfloat16, 0.0)
    assert gpu.vocab_size in (128_256, 262_208) and _on_gpu(gpu)
    compare_everything(cpu, gpu)
@pytest.mark.gpu
@needs_cuda
def test_a_model_spread_over_gpus_cpu_and_disk_gives_the_cpu_trace(tiny_folders):
    """accelerate's dispatch with a GPU executing: some layers on the GPU(s), some in CPU RAM, some on disk."""
    folder = tiny_folders["llama"]
    budgets = {i: 80_000 for i in range(torch.cuda.device_count())} | {"cpu": 80_000}  # of a 150 kB model
    spread = load_model(str(folder), max_memory=budgets)
    assert spread.plan.execution_device == "cuda:0" and spread.device == "cuda:0"
    assert {"cuda:0", "disk"} <= set(spread.plan.bytes_on)
    cpu = load_model(str(folder), device="cpu")
    compare_everything(cpu, spread)
@pytest.mark.gpu
@needs_cuda
def test_running_out_of_gpu_memory_halfway_through_a_trace_is_a_message(tiny_folders):
    """A real torch.OutOfMemoryError: the process may use only what it holds now plus 1 MiB."""
    lm = load_model(str(tiny_folders["llama"]))
    long_prompt = "the apple is green. " * 200  # cut at 512 tokens: attention alone is 3 x 4 x 512² floats
    torch.cuda.synchronize()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(0) + 2**20) / total, 0)
    try:
        with pytest.raises(ModelLoadError, match="ran out of GPU memory on this 512-token prompt"):
            run_trace(lm, long_prompt)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    assert not lm.lock.locked()
    assert run_trace(lm, long_prompt).attentions.shape[-1] == 512  # the model works again


def _pages() -> list[str]:
    home = (Path(__file__).resolve().parents[1] / "dashboard" / "Home.py").read_text()
    return re.findall(r'"(views/[a-z_/]+\.py)"', home)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.app
@pytest.mark.parametrize("models", ["tiny", "embedded"])
def test_every_page_on_cuda(tiny_folders, models):
    query = {"a": str(tiny_folders["llama"]), "b": str(tiny_folders["gemma3"])} if models == "tiny" else {}
    every_page_runs_with_models_on(query, _on_gpu)


def every_page_runs_with_models_on(query: dict, placed) -> None:
    """Every page opens without an exception box, with both models placed as `placed(lm)` says."""
    from tests.apptest import assert_clean, run_page

    pages = _pages()
    assert len(pages) >= 11
    for page in pages:
        app = run_page(page, query=query)
        assert_clean(app)
        slots = app.session_state["_slots"]
        assert len(slots) == 2 and all(placed(slot.lm) for slot in slots), page


# ---------------------------------------------------------------- rehearsal on the CPU (fast tier)
# The comparison above never runs where no GPU is lent. These run it on the CPU against models
# dispatched by accelerate (every layer offloaded to disk: the hooks that move weights and inputs
# between devices are the same ones a GPU placement uses), so the GPU tier's own code is exercised
# wherever the tests run, and every analysis is checked on a dispatched model.


@pytest.mark.parametrize("kind", ["llama", "gemma3", "gemma3-vision"])
def test_rehearsal_every_analysis_on_a_disk_offloaded_copy(tiny_folders, kind, tmp_path):
    cpu = load_model(str(tiny_folders[kind]), device="cpu")
    offloaded = load_model(str(tiny_folders[kind]), device_map="disk", offload_folder=tmp_path)
    assert "disk" in offloaded.plan.bytes_on
    compare_everything(cpu, offloaded)


def test_rehearsal_real_llama_shape_in_bf16():
    """The real-shape bf16 comparison's code on two CPU copies (seeded alike, so equal)."""
    compare_everything(random_real_shape("llama-3.2-3b"), random_real_shape("llama-3.2-3b"))


@pytest.mark.app
def test_rehearsal_every_page_with_both_models_offloaded_to_disk(tiny_folders):
    """The page sweep of test_every_page_on_cuda, with the sidebar's placement set to disk offload."""
    query = {"a": str(tiny_folders["llama"]), "b": str(tiny_folders["gemma3"]), "place_a": "disk", "place_b": "disk"}
    every_page_runs_with_models_on(query, lambda lm: lm.plan is not None and "disk" in lm.plan.bytes_on)
