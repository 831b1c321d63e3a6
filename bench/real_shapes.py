"""Benchmarks at the real sizes: random-weight models of the Llama-3.2-3B and Gemma-3-4B configs in bf16.

The embedded pair is small (135 M / 270 M parameters), so it hides costs that grow with
model size. Here snapshot folders with the *real* configs (core/configs/*.json) and random
weights are measured, each model in a fresh subprocess, one at a time (bench/loading.py does
the same), every figure next to a back-of-envelope bound measured in the same process
(bench/bounds.py) and the load average of the shared machine:

- each page's FIRST computation on a freshly loaded model (what a visitor waits for), against
  the bound of its dominant operation: the trace (/hidden states, /attention) and the similarity
  sentences against forward passes, the logit lens against its LM-head matmul, nearest tokens
  against one bandwidth pass over the embedding table. Target: <= 2x the bound;
- the same model offloaded to disk with accelerate (`load_model(..., device_map="disk")`):
  the first trace next to the in-memory one, and the plan's own estimate;
- the logit lens's two head paths (the model's bf16 vs fp32 blocks, core/running/lens.py `upcast_head`)
  timed side by side, with the path its rule picked (from the CPU's bf16 instructions), and
  each path's last layer against the model's own logits;
- the libgomp wait policy: a forward pass with OpenMP threads spinning (libgomp's default) vs
  sleeping (PASSIVE, what bench/__init__.py sets) while they wait, at this moment's load;
- full run only: load vs raw `from_pretrained`, resident memory vs weight bytes, and `run_trace`
  vs a plain forward at 128 tokens.

Random weights do not change these costs, as long as they behave like a trained model's: no
NaN/inf, no subnormal floods, hidden states of plausible size. So each tensor is drawn from
N(0, initializer_range) as the model's own init does, norms are set to their identity
(1 for Llama's x * w, 0 for Gemma's x * (1 + w)), biases to 0; each child reports the largest
|hidden state| and counts non-finite and subnormal values in the trace. The folder is written
without materialising the model: shapes come from a meta-device build, and each <= 2 GB
safetensors shard is drawn and written on its own, with an index file as `save_pretrained` writes.

    python -m bench.real_shapes [--quick]     (quick: no raw-load, 128-token or wait-policy rows)
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
# Bumped when the way the weights are drawn changes, so an older cached folder is not reused.
RECIPE = "init2"
SHARD_BYTES = 2_000_000_000
TRACE_TOKENS = 128
PROMPT = ("The lecture compares two language models side by side: how they cut text into tokens, "
          "what their embeddings look like, how the hidden states change from layer to layer, "
          "and where each attention head looks. ") * 8
# The pages' default inputs (dashboard/views/running/attention.py SHORT, similarity.py FOUR, embeddings.py).
LECTURE = "the apple is green. what color is the apple?"
SENTENCES = ("I ate an apple for breakfast", "She baked an apple pie for dessert",
             "The company that makes iPads and AirPods is called apple",
             "I bought shares of apple, the company behind the iPhone")
WORD = "apple"


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


def identity_value(norm: torch.nn.Module) -> float:
    """The weight value that makes `norm` a plain normalisation: 1 for x * w, 0 for Gemma's x * (1 + w).

    Found by running the norm's own class (on CPU, tiny) with weights 0 and 1: its output is
    affine in the weight, y(w) = y0 + w (y1 - y0), and the plain normalisation is y1 - y0, so
    w = 1 - y0 / (y1 - y0) (least squares over the elements), whatever the convention.
    """
    dim = norm.weight.shape[0]
    probe = type(norm)(dim)
    x = torch.randn(1, dim, generator=torch.Generator().manual_seed(0))
    outputs = []
    with torch.no_grad():
        for value in (0.0, 1.0):
            probe.weight.fill_(value)
            outputs.append(probe(x).float())
    y0, y1 = outputs
    unit = y1 - y0  # the plain normalisation of x
    return round(float(1.0 - (y0 * unit).sum() / (unit * unit).sum()), 6)


def _weight_recipe(config) -> tuple[float, dict[str, float]]:
    """(std of every matrix, {norm weight name: identity value}) for the text model of `config`."""
    model = _meta_model(config)
    std = getattr(config.get_text_config(), "initializer_range", 0.02)
    norms = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if "norm" in type(module).__name__.lower() and weight is not None and weight.dim() == 1:
            norms[f"{name}.weight"] = identity_value(module)
    return std, norms


def _random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, generator, std: float,
                   norms: dict[str, float]) -> torch.Tensor:
    if name in norms:
        return torch.full(shape, norms[name], dtype=dtype)
    if len(shape) == 1:  # biases
        return torch.zeros(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=generator)


def real_shape_folder(preset: str, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A snapshot folder (config, sharded safetensors, tokenizer) with random weights of `preset`'s real config.

    Created once under cache_dir()/random-real-shapes/<preset>-<RECIPE>; written under a temporary
    name and renamed at the end, so an interrupted run leaves no half-written folder.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from core.loading.gguf import convert_gguf
    from core.loading.sources import cache_dir
    from core.loading.sources import embedded_gguf_path

    suffix = "" if dtype == torch.bfloat16 else "-" + str(dtype).removeprefix("torch.")
    target = cache_dir() / "random-real-shapes" / f"{preset}{suffix}-{RECIPE}"
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
        std, norms = _weight_recipe(config)
        element_size = torch.tensor([], dtype=dtype).element_size()
        shards = _plan_shards(shapes, element_size)
        generator = torch.Generator().manual_seed(0)
        weight_map, total = {}, 0
        for index, names in enumerate(shards, start=1):
            filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            tensors = {name: _random_tensor(name, shapes[name], dtype, generator, std, norms) for name in names}
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


# ---------------------------------------------------------------- one model per subprocess


def run_child(mode: str, folder: Path, quick: bool = False, env: dict | None = None) -> dict:
    """Run bench/real_shapes_child.py `mode` on `folder` in a fresh interpreter; its JSON result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", **(env or {}))
    args = [sys.executable, "-m", "bench.real_shapes_child", mode, str(folder)] + (["--quick"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"bench child {mode} {folder.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def page_rows(case: str, r: dict) -> list[Row]:
    """Each page's first computation vs the measured warm operation and vs the bound (target <= 2x the bound)."""
    T, rate = r["tokens"], r["forward_rate"] / 1e9
    head = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in r["head_rates"].items())
    return [
        Row(f"first run_trace (/hidden states, /attention) vs warm plain forward; bound: forward FLOPs at "
            f"{rate:.0f} GFLOP/s", f"{case}, {T} tokens", r["trace_first"], r["plain"], "s", "<= 2x bound",
            bound=r["forward_bound"]),
        Row("first similarity computation (4 traces + curves) vs warm plain forwards; bound: 4 forwards",
            f"{case}, {r['similarity_tokens']} tokens", r["similarity_first"], r["similarity_plain"], "s",
            "<= 2x bound", bound=r["similarity_bound"]),
        Row(f"first logit lens (+ trajectory) vs warm lens; bound: head matmul at the faster "
            f"dtype (GFLOP/s: {head})", f"{case}, {r['lens_rows']} rows x {r['hidden']:,} x {r['vocab']:,}",
            r["lens_first"], r["lens_warm"], "s", "<= 2x bound", bound=r["head_bound"]),
        Row("embedding row norms, computed once by load_model so that no query pays for them: their cost "
            "vs the whole load", case, r["norms"], r["load"], "s", "reported"),
        Row(f"first nearest tokens (row norms done at load) vs warm query; bound: one pass over the table at "
            f"{r['bandwidth'] / 1e9:.1f} GB/s", f"{case}, table {r['table_shape']}", r["nearest_first"],
            r["nearest_warm"], "s", "<= 2x bound", bound=r["table_bound"]),
        Row(f"logit lens head path: model's {r['dtype']} vs fp32 blocks (rule picked: "
            f"{'fp32 blocks' if r['probe_upcast'] else r['dtype']})", f"{case}, {r['lens_rows']} rows",
            r["lens_native"], r["lens_upcast"], "s", "rule picks the faster", bound=r["head_bound"]),
        Row("lens last layer vs the model's own logits, max |diff| (fp32 blocks; model's dtype)",
            f"{case}, logits up to {r['logit_scale']:.3g}", r["lens_diff_upcast"], r["lens_diff_native"], "",
            "within bf16 rounding"),
        Row("random weights: largest |hidden state| (embeddings; any layer); non-finite 0, subnormal "
            f"{r['subnormal']}", case, r["hidden_max"], r["embedding_max"], "", "finite, plausible"),
    ]


def measure(quick: bool = False) -> list[Row]:
    rows = []
    in_memory = {}
    for preset in PRESETS:  # one 3-4 B model in memory at a time: the children run one after another
        folder = real_shape_folder(preset)
        warm_page_cache(folder)
        case = f"{preset} random bf16"
        if not quick:
            raw = run_child("raw", folder)
        ours = run_child("ours", folder, quick)
        in_memory[preset] = ours
        rows.append(Row("load: load_model(folder, device_map='cpu') vs raw from_pretrained", case, ours["load"],
                        raw["load"] if not quick else float("nan"), "s"))
        rows += page_rows(case, ours)
        if not quick:
            rows += [
                Row("memory: RSS growth after load vs weight bytes (mmap, untouched)", case, ours["rss_load"] / 1e6,
                    ours["weight_bytes"] / 1e6, "MB"),
                Row("memory: RSS growth after every page's computation vs weight bytes", case,
                    ours["rss_end"] / 1e6, ours["weight_bytes"] / 1e6, "MB", "≤ 1.15x"),
                Row(f"run_trace vs plain forward ({TRACE_TOKENS} tokens); bound: forward FLOPs at "
                    f"{ours['rate_128'] / 1e9:.0f} GFLOP/s", case, ours["trace_128"], ours["plain_128"], "s",
                    "<= 1.5x", bound=ours["bound_128"]),
            ]
    # disk offload (accelerate): the first trace next to the in-memory one, Llama shape
    preset = PRESETS[0]
    offload = run_child("offload", real_shape_folder(preset), quick)
    rows.append(Row(f"offloaded to disk (device_map='disk', {offload['disk_gb']:.1f} GB on disk): first trace vs "
                    f"in memory; bound: plan's disk-read estimate + in-memory forward bound", f"{preset} random bf16, {offload['tokens']} tokens",
                    offload["trace_first"], in_memory[preset]["trace_first"], "s", "reported",
                    bound=offload["plan_seconds"] + in_memory[preset]["forward_bound"]))
    rows.append(Row("offloaded to disk: second trace vs in memory (warm plain forward)",
                    f"{preset} random bf16, {offload['tokens']} tokens", offload["trace_second"],
                    in_memory[preset]["plain"], "s", "reported"))
    if not quick:  # libgomp's wait policy, side by side at this moment's load (two children each)
        spin = run_child("policy", real_shape_folder(preset), env={"OMP_WAIT_POLICY": "ACTIVE"})
        sleep = run_child("policy", real_shape_folder(preset), env={"OMP_WAIT_POLICY": "PASSIVE"})
        rows.append(Row("plain forward, 2 threads: OpenMP threads spinning (libgomp default) vs sleeping "
                        "(PASSIVE) while waiting", f"{preset} random bf16, {spin['tokens']} tokens",
                        spin["two_threads"], sleep["two_threads"], "s", "reported", bound=sleep["bound"]))
        rows.append(Row("plain forward, spinning: 2 threads vs 1 thread", f"{preset} random bf16, {spin['tokens']} tokens",
                        spin["two_threads"], spin["one_thread"], "s", "reported", bound=spin["bound"]))
    return rows


if __name__ == "__main__":
    main(measure)
