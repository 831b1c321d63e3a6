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


def print_table(rows: list[Row]) -> str:
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
