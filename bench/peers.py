"""The same analyses through TransformerLens 4, the usual interpretability library: time and peak memory.

TransformerLens 4 wraps a Hugging Face model in a `TransformerBridge`
(`TransformerBridge.boot_transformers(name_or_folder)`) and records activations with
`run_with_cache(ids)`, which by default keeps every hook point (~1,400 tensors for
SmolLM2). We compare, on the same snapshot folder and the same token ids:

- load: our `load_model(folder)` vs `boot_transformers(folder)`, after both sides imported the
  transformers modules of the architecture (transformers imports them lazily, TransformerLens eagerly);
- run: our `run_trace` (hidden states + attention weights + logits, copied to NumPy)
  vs `run_with_cache(ids)` (full cache; for the embedded pair in the full run also a cache
  filtered to the same content as a Trace: `hook_resid_post` + `hook_pattern`);
- peak memory: peak resident-memory growth of the process over load + run (after imports).

Both sides run the same dtype (fp32 for the embedded pair, bf16 for the real shapes),
eager attention, under `torch.inference_mode()`, each library in its own fresh subprocess
so neither sees the other's caches. Real-shape folders (random weights of the real
Llama-3.2-3B / Gemma-3-4B configs, see bench/real_shapes.py) only in the full run.
Where TransformerLens is missing or refuses a model, the row says so instead of failing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Row, main
from bench.real_shapes import PROMPT, PRESETS, real_shape_folder, warm_page_cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import gc, json, sys, time, psutil
sys.path.insert(0, {root!r})
mode, folder, dtype_name, repeat, tokens, prompt = sys.argv[1:7]
repeat = int(repeat)
import torch
dtype = getattr(torch, dtype_name)
if mode == "ours":
    from core import load_model, run_trace
else:
    from transformer_lens.model_bridge import TransformerBridge
# The transformers modules both sides need for this architecture (config, tokenizer, model class),
# imported up front on both sides: transformers imports them lazily, TransformerLens at its own import.
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(folder))]
process = psutil.Process()
rss0 = process.memory_info().rss  # after imports: they are not part of either side's cost


def peak_growth():
    # VmHWM: this address space's peak RSS. Not ru_maxrss: Linux carries it over fork + exec, so a
    # child would report the parent's peak (the bench process's, after other modules' big tables).
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024 - rss0


def best_of(fn):
    best, value = float("inf"), None
    for _ in range(repeat):
        value = None  # the previous result is freed first: one model in memory at a time
        gc.collect()
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


result = {{}}
start = time.perf_counter()
if mode == "ours":
    lm = load_model(folder, dtype=dtype)
    result["load"] = time.perf_counter() - start
    result["load_peak"] = peak_growth()
    result["run"], trace = best_of(lambda: run_trace(lm, prompt, max_tokens=int(tokens)))
    result["ids"] = trace.token_ids.tolist()
else:
    try:
        bridge = TransformerBridge.boot_transformers(folder, device="cpu", dtype=dtype)
    except Exception as error:  # an architecture TransformerLens does not support
        print(json.dumps({{"error": f"{{type(error).__name__}}: {{str(error)[:300]}}"}}))
        sys.exit(0)
    result["load"] = time.perf_counter() - start
    result["load_peak"] = peak_growth()
    ids = torch.tensor([json.loads(tokens)])

    def cache(names_filter=None):
        with torch.inference_mode():
            return bridge.run_with_cache(ids, names_filter=names_filter)

    if mode == "tl-filtered":  # first, so its peak is not hidden by the full cache's
        same_as_trace = lambda name: name.endswith("hook_resid_post") or name.endswith("hook_pattern")
        result["run_filtered"], _ = best_of(lambda: cache(same_as_trace))
        result["peak_filtered"] = peak_growth()
    result["run"], (_, activations) = best_of(cache)
    result["hooks"] = len(activations)
result["peak"] = peak_growth()
print(json.dumps(result))
"""


def run_child(mode: str, folder: Path, dtype: str, repeat: int, tokens) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(folder), dtype,
                          str(repeat), str(tokens), PROMPT], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1][:300] if out.stderr else ''}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def transformer_lens_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:
        return None


def compare(case: str, folder: Path, dtype: str, tokens: int, repeat: int, filtered: bool) -> list[Row]:
    """Rows for one model: ours first (it also fixes the token ids), then TransformerLens on the same ids."""
    ours = run_child("ours", folder, dtype, repeat, tokens)
    if "error" in ours:
        raise RuntimeError(f"our side failed on {case}: {ours['error']}")
    theirs = run_child("tl-filtered" if filtered else "tl", folder, dtype, repeat, json.dumps(ours["ids"]))
    if "error" in theirs:
        print(f"TransformerLens cannot run {case}: {theirs['error']}", file=sys.stderr)
        return [Row("vs TransformerLens: not supported", f"{case}: {theirs['error'][:80]}",
                    ours["load"] + ours["run"], float("nan"), "s")]
    n = len(ours["ids"])
    rows = [
        Row("vs TransformerLens: load_model vs boot_transformers", case, ours["load"], theirs["load"], "s"),
        Row(f"vs TransformerLens: run_trace vs run_with_cache ({theirs['hooks']} hooks, {n} tokens)", case,
            ours["run"], theirs["run"], "s"),
    ]
    if filtered:
        rows.append(Row(f"vs TransformerLens: run_trace vs run_with_cache(resid_post+pattern) ({n} tokens)", case,
                        ours["run"], theirs["run_filtered"], "s"))
    rows += [
        Row("vs TransformerLens: load + run, total time", case, ours["load"] + ours["run"],
            theirs["load"] + theirs["run"], "s"),
        Row("vs TransformerLens: peak RSS growth, load + run", case, ours["peak"] / 1e6, theirs["peak"] / 1e6, "MB"),
    ]
    return rows


def measure(quick: bool = False) -> list[Row]:
    from core.loading.gguf import convert_gguf
    from core.loading.sources import embedded_gguf_path

    version = transformer_lens_version()
    if version is None:
        print("transformer-lens is not installed (pip install -r requirements-dev.txt)", file=sys.stderr)
        return [Row("vs TransformerLens: not installed", "pip install transformer-lens", float("nan"),
                     float("nan"), "s")]
    # quick: SmolLM2 only, a short prompt (a ~20 s TransformerLens import per child
    # and a shared 2-core machine make each child tens of seconds)
    tokens, repeat = (32, 2) if quick else (128, 2)
    names = ("smollm2-135m",) if quick else ("smollm2-135m", "gemma-3-270m")
    rows = []
    for name in names:
        folder = convert_gguf(embedded_gguf_path(name))
        rows += compare(f"{name} fp32 (TL {version})", folder, "float32", tokens, repeat, filtered=not quick)
    if not quick:
        for preset in PRESETS:  # one 3-4 B model in memory at a time: the children run one after another
            folder = real_shape_folder(preset)
            warm_page_cache(folder)
            rows += compare(f"{preset} random bf16 (TL {version})", folder, "bfloat16", 128, 1, filtered=False)
    return rows


if __name__ == "__main__":
    main(measure)
