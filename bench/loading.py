"""Loading benchmarks: our load_model vs raw transformers on the same files, and memory vs weight bytes.

- Embedded pair, cold: GGUF -> dequantize -> save the safetensors cache -> load, vs a raw
  `from_pretrained(gguf_file=...)` (model + tokenizer) of the same GGUF file.
- Embedded pair, cached: the second start, vs the same raw GGUF load (the issue's target: both ≤ 10 s).
- Snapshot folder: load_model vs raw `from_pretrained` + `AutoTokenizer` of the same folder.
- Memory: resident-memory growth of a fresh process after load_model vs the bytes of the weights.
Each load runs in a fresh subprocess so caches and allocator state do not leak between them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Row, main

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time, psutil
sys.path.insert(0, {root!r})
mode, source = sys.argv[1], sys.argv[2]
rss0 = psutil.Process().memory_info().rss
import torch, transformers  # imports are not part of the load time
from transformers import AutoModelForCausalLM, AutoTokenizer
start = time.perf_counter()
if mode == "ours":
    from core import load_model
    lm = load_model(source)
    weight_bytes = lm.weight_bytes
elif mode == "raw-gguf":
    folder, name = os.path.split(source)
    AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
else:
    AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager")
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "rss_growth": psutil.Process().memory_info().rss - rss0,
                   "weight_bytes": weight_bytes}}))
"""


def run_child(mode: str, source: str, cache_dir: str | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache_dir:
        env["LMSBS_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, source],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(quick: bool = False) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from core.loading.gguf import converted_gguf_folder
    from core.loading.sources import embedded_gguf_path

    rows = []
    cached_total, raw_total = 0.0, 0.0
    for name in ("smollm2-135m", "gemma-3-270m"):
        gguf = str(embedded_gguf_path(name))
        raw = run_child("raw-gguf", gguf)
        if not quick:
            with tempfile.TemporaryDirectory() as empty_cache:
                cold = run_child("ours", name, cache_dir=empty_cache)
            rows.append(Row("load: cold GGUF + write cache vs raw GGUF from_pretrained", name,
                            cold["seconds"], raw["seconds"], "s"))
        ours = run_child("ours", name)  # default cache: converted on an earlier run
        rows.append(Row("load: cached vs raw GGUF from_pretrained", name, ours["seconds"], raw["seconds"], "s",
                        "both cached ≤ 10 s"))
        folder = str(converted_gguf_folder(Path(gguf)))
        plain = run_child("raw-folder", folder)
        rows.append(Row("load: snapshot folder vs raw from_pretrained", name, ours["seconds"], plain["seconds"], "s"))
        rows.append(Row("memory: RSS growth vs weight bytes", name, ours["rss_growth"] / 1e6,
                        ours["weight_bytes"] / 1e6, "MB"))
        cached_total += ours["seconds"]
        raw_total += raw["seconds"]
    rows.append(Row("load: embedded pair, cached vs raw GGUF", "both models", cached_total, raw_total, "s",
                    "≤ 10 s"))
    return rows


if __name__ == "__main__":
    main(measure)
