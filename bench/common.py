"""Shared benchmark plumbing: timing, resident memory and one printed table of ratios.

Every benchmark module exposes `measure(quick: bool) -> list[Row]` and can be
run alone (`python -m bench.<module>`); `python -m bench` runs them all in one
process and prints one table. Ratios are measured side by side in the same run.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Row:
    benchmark: str  # what is compared, e.g. "nearest tokens vs one bandwidth pass"
    case: str  # on what, e.g. "bf16 262,208 x 2,560"
    ours: float  # measured value of our code
    baseline: float  # measured value of the reference, same run
    unit: str  # "s", "MB", ...
    target: str = ""  # e.g. "<= 2x"
    # back-of-envelope bound for `ours` (e.g. FLOPs / measured matmul FLOP/s), same unit; None: not a time
    bound: float | None = None
    # 1-minute load average when the row was measured: this machine is shared, and a figure
    # taken at load 8 on 2 cores is not the same figure as one taken at load 1
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 1e6


def machine_line() -> str:
    """The facts that decide these figures: CPU (bf16 instructions or not), cores, threads, wait policy, load.

    A bf16 matmul runs on AVX512-BF16 / AMX where the CPU has them and is emulated (several
    times slower than fp32) where it does not; a loaded machine with spinning OpenMP threads is
    slower again (README "Benchmarks"). A table without these facts cannot be compared with another.
    """
    import torch

    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    model = "unknown CPU"
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or ["no bf16 instructions"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} capability "
            f"{torch.backends.cpu.get_cpu_capability()} ({', '.join(bf16)}), {torch.get_num_threads()} threads, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, load average {load}, "
            f"{psutil.virtual_memory().available / 2**30:.1f} GiB free")


def print_table(rows: list[Row]) -> str:
    print(f"Machine: {machine_line()}", flush=True)
    lines = ["| benchmark | case | ours | baseline | ratio | target | bound | ours / bound | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = f"{r.bound:.3g} {r.unit} | {r.ours / r.bound:.2f}x" if r.bound else " | "
        lines.append(f"| {r.benchmark} | {r.case} | {r.ours:.3g} {r.unit} | {r.baseline:.3g} {r.unit} | "
                     f"{r.ratio:.2f}x | {r.target} | {bound} | {r.load:.1f} |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main(measure) -> None:
    quick = "--quick" in sys.argv
    print_table(measure(quick=quick))
