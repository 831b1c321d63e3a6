"""Benchmarks at the real sizes: random-weight models of the Llama-3.2-3B and Gemma-3-4B configs in bf16.

The embedded pair is small (135 M / 270 M parameters), so it hides costs that
grow with model size. Here we build snapshot folders with the *real* configs
(core/configs/*.json) and random weights, and measure, each load in a fresh
subprocess (as bench/loading.py does):

- load: `load_model(folder)` vs a raw `AutoModelForCausalLM.from_pretrained` (+ tokenizer) of the folder;
- memory: resident-memory growth vs the bytes of the weights, right after `load_model`
  (safetensors are memory-mapped, so untouched weights are not resident yet) and after the
  forward passes below (every weight read once);
- trace: `run_trace` at 128 tokens (hidden states + attention weights copied to NumPy)
  vs a plain forward pass of the same ids (no hidden states, no attentions).

Random weights do not change any of these costs: they depend on shapes and dtypes only.
The folder is written without ever materialising the model: the architecture is built on
the meta device (no memory) to learn names and shapes, then each tensor is drawn from
N(0, 0.02) (norm weights = 1, biases = 0) and written to safetensors shards of <= 2 GB with
an index file, as `save_pretrained` does, so at most one shard is in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import Row, main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("llama-3.2-3b", "gemma-3-4b")
# Each real shape borrows the tokenizer of its embedded relative: only the ids matter here,
# and both vocabularies are smaller than the real ones (49,152 < 128,256; 262,144 < 262,208).
TOKENIZER_FROM = {"llama-3.2-3b": "smollm2-135m", "gemma-3-4b": "gemma-3-270m"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "chat_template.jinja")
SHARD_BYTES = 2_000_000_000
TRACE_TOKENS = 128
PROMPT = ("The lecture compares two language models side by side: how they cut text into tokens, "
          "what their embeddings look like, how the hidden states change from layer to layer, "
          "and where each attention head looks. ") * 8


# ---------------------------------------------------------------- the random snapshot folder


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")


def _plan_shards(shapes: dict[str, tuple[int, ...]], element_size: int) -> list[list[str]]:
    """Group tensor names, in model order, into shards of at most SHARD_BYTES."""
    shards, current, size = [], [], 0
    for name, shape in shapes.items():
        nbytes = element_size * int(torch.Size(shape).numel())
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def _random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, generator) -> torch.Tensor:
    if len(shape) == 1:  # norm weights and biases: the identity-ish values a fresh model starts from
        return torch.zeros(shape, dtype=dtype) if name.endswith("bias") else torch.ones(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=generator)


def real_shape_folder(preset: str, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A snapshot folder (config, sharded safetensors, tokenizer) with random weights of `preset`'s real config.

    Created once under cache_dir()/random-real-shapes/<preset>; written under a temporary
    name and renamed at the end, so an interrupted run leaves no half-written folder.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from core.cache import cache_dir, convert_gguf
    from core.sources import embedded_gguf_path

    suffix = "" if dtype == torch.bfloat16 else "-" + str(dtype).removeprefix("torch.")
    target = cache_dir() / "random-real-shapes" / f"{preset}{suffix}"
    if (target / "model.safetensors.index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=target.parent))
    try:
        config = AutoConfig.from_pretrained(ROOT / "core" / "configs" / f"{preset}.json")
        config.dtype = dtype
        config.save_pretrained(work)
        # named_parameters() lists tied weights once (lm_head shares embed_tokens), as save_pretrained does.
        shapes = {name: tuple(p.shape) for name, p in _meta_model(config).named_parameters()}
        element_size = torch.tensor([], dtype=dtype).element_size()
        shards = _plan_shards(shapes, element_size)
        generator = torch.Generator().manual_seed(0)
        weight_map, total = {}, 0
        for index, names in enumerate(shards, start=1):
            filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            tensors = {name: _random_tensor(name, shapes[name], dtype, generator) for name in names}
            save_file(tensors, work / filename, metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            weight_map.update(dict.fromkeys(names, filename))
            del tensors  # keep at most one shard in memory
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (work / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
        tokenizer_folder = convert_gguf(embedded_gguf_path(TOKENIZER_FROM[preset]))
        for name in TOKENIZER_FILES:
            if (tokenizer_folder / name).exists():
                shutil.copy2(tokenizer_folder / name, work / name)
        if target.exists():  # a stale, incomplete folder from an older layout
            shutil.rmtree(target)
        work.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def warm_page_cache(folder: Path) -> None:
    """Read the weight files once so every timed load reads them from the page cache, not the disk."""
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            while handle.read(64 << 20):
                pass


# ---------------------------------------------------------------- measurement (one subprocess per load)

CHILD = r"""
import json, sys, time, psutil
sys.path.insert(0, {root!r})
mode, folder, tokens, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from bench.common import timed
from core import load_model, run_trace
from core.tokens import encode
rss0 = psutil.Process().memory_info().rss  # after imports: they are not part of the load
start = time.perf_counter()
if mode == "ours":
    lm = load_model(folder)
    seconds = time.perf_counter() - start
    result = {{"seconds": seconds, "rss_growth": psutil.Process().memory_info().rss - rss0,
              "weight_bytes": lm.weight_bytes}}
    if tokens:
        ids = torch.tensor([encode(lm, prompt)[0][:tokens]])  # the ids run_trace will run

        def plain():
            with torch.inference_mode():
                lm.model(input_ids=ids, use_cache=False)

        # alternate the two (best of 2 each) so load from other processes hits both alike
        best_plain = best_trace = float("inf")
        for _ in range(2):
            best_plain = min(best_plain, timed(plain, repeat=1))
            best_trace = min(best_trace, timed(lambda: run_trace(lm, prompt, max_tokens=tokens), repeat=1))
        result["plain"], result["trace"], result["tokens"] = best_plain, best_trace, ids.shape[1]
        # safetensors are memory-mapped: pages count only once a forward pass has read them
        result["rss_after_run"] = psutil.Process().memory_info().rss - rss0
else:
    AutoTokenizer.from_pretrained(folder)
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager",
                                                       output_loading_info=True)
    result = {{"seconds": time.perf_counter() - start}}
    # a name mismatch would silently time a random init instead of a load
    assert not info["missing_keys"] and not info["unexpected_keys"], info
print(json.dumps(result))
"""


def run_child(mode: str, folder: Path, tokens: int = 0) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(folder), str(tokens),
                          PROMPT], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {mode} {folder.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(quick: bool = False) -> list[Row]:
    if quick:  # minutes of work per model: only in the full run
        return []
    rows = []
    for preset in PRESETS:
        folder = real_shape_folder(preset)
        warm_page_cache(folder)
        raw = run_child("raw", folder)  # one model in memory at a time: children run one after another
        ours = run_child("ours", folder, tokens=TRACE_TOKENS)
        case = f"{preset} random bf16"
        rows += [
            Row("load: folder vs raw from_pretrained", case, ours["seconds"], raw["seconds"], "s"),
            Row("memory: RSS growth after load vs weight bytes (mmap, untouched)", case, ours["rss_growth"] / 1e6,
                ours["weight_bytes"] / 1e6, "MB"),
            Row("memory: RSS growth after load + 4 forwards vs weight bytes", case, ours["rss_after_run"] / 1e6,
                ours["weight_bytes"] / 1e6, "MB", "≤ 1.15x"),
            Row(f"trace vs plain forward ({ours['tokens']} tokens)", case, ours["trace"], ours["plain"], "s"),
        ]
    return rows


if __name__ == "__main__":
    main(measure)
