"""GPU targets at the real sizes; prints "no GPU" and measures nothing where torch.cuda is not available.

With a CUDA device, on the random-weight real-shape pair of bench/real_shapes.py (bf16):
- the logit lens over the lecture prompt's trace vs its bound, the LM-head matmul alone over the
  same rows (one `F.linear` of all (layers + 1) x T rows with the model's own head, timed with
  CUDA events after a warm-up). Target: <= 1.2x;
- the whole /attention page (heads up close, both grids, summaries) for the pair, navigation ->
  fully drawn in headless Chromium, the models on the GPU, warm server caches, against the
  Streamlit floor (an empty app) of the same run. Target: <= 1.5 s.
Both models load one after another (a 3-4 B model each); the page loads both, as a visitor's would.

    python -m bench.gpu
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import torch

from bench.common import Row, main

ROOT = Path(__file__).resolve().parents[1]
PORT = 8605


def cuda_seconds(fn, repeat: int = 3) -> float:
    """Best of `repeat` timed with CUDA events, after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return best


def lens_rows(preset: str, folder: Path) -> list[Row]:
    import numpy as np

    from bench.real_shapes import LECTURE
    from core import load_model, run_trace
    from core.running.lens import logit_lens

    lm = load_model(str(folder), device="cuda")
    trace = run_trace(lm, LECTURE)
    entries, T, H = trace.hidden_states.shape
    x = torch.from_numpy(np.array(trace.hidden_states.reshape(-1, H))).to("cuda", lm.dtype)  # (rows, H)
    head = lm.lm_head.weight  # (V, H)
    bound = cuda_seconds(lambda: torch.nn.functional.linear(x, head))
    lens = cuda_seconds(lambda: logit_lens(lm, trace, 5))
    del lm, x, head
    torch.cuda.empty_cache()  # the next model gets the whole GPU
    return [Row("GPU: logit lens vs the LM-head matmul of the same rows", f"{preset} random bf16, {entries} x {T} rows, "
                f"{torch.cuda.get_device_name()}", lens, bound, "s", "<= 1.2x", bound=bound)]


def attention_page_rows(folders: dict[str, Path]) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from bench.attention import render_time
    from tests.browser import CHROMIUM_ARGS, chromium_path, serve_app, wait_until_idle

    a, b = (str(folders[p]) for p in folders)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        with serve_app(PORT) as base:
            url = f"{base}/attention?a={quote(a)}&b={quote(b)}"  # local folders: the pickers' "Other"
            warm = browser.new_page()
            warm.goto(url)  # loads both models onto the GPU and fills the server caches
            wait_until_idle(warm, timeout=900)
            warm.close()
            page_time, _ = render_time(browser, url, 2, 4, 3, timeout_s=300)
            empty, _ = render_time(browser, f"{base}/", 0, 0, 3, timeout_s=120)
        browser.close()
    return [Row("GPU: whole /attention page drawn (up close, grids, summaries) vs Home drawn",
                f"real-shape pair random bf16 on {torch.cuda.get_device_name()}, warm caches",
                page_time, empty, "s", "<= 1.5 s")]


def measure(quick: bool = False) -> list[Row]:
    if not torch.cuda.is_available():
        print("no GPU: torch.cuda is not available, so the GPU targets (logit lens <= 1.2x the head matmul; "
              "whole /attention page for the real-shape pair <= 1.5 s in Chromium) were not measured",
              file=sys.stderr, flush=True)
        return []
    from bench.real_shapes import PRESETS, real_shape_folder

    folders = {preset: real_shape_folder(preset) for preset in PRESETS}
    rows = []
    for preset, folder in folders.items():
        rows += lens_rows(preset, folder)
    rows += attention_page_rows(folders)
    return rows


if __name__ == "__main__":
    main(measure)
