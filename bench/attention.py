"""Attention page: stored bytes, build time, payload and real-browser render time of the head grids.

Compared side by side in one run:
- stored attention (float16 in the Trace) vs float32 as the model returns it, at 12 / 128 / 512 tokens;
- run_trace (keeps every head) vs a plain forward pass that keeps nothing;
- the grid PNG (what the page ships) vs the raw half-precision weights it draws;
- navigation -> fully drawn in headless Chromium: both grids as one image each vs one faceted
  Altair chart each (the embedded pair at 12 tokens, and the reference pair's shapes 28×24 and 34×8,
  fed random causal attention arrays to the same image builder). The faceted chart cannot draw
  128 tokens (5.5 M rectangles), so at 128 tokens the baseline column is the issue's target (2.5 s).
Also the whole /attention page (up close + grids + summaries) at 12 tokens, warm server caches.

    python -m bench.attention [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import Row, timed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))
PORT = 8604
SHORT = "the apple is green. what color is the apple?"
REAL_SHAPES = {"llama-3.2-3b": (28, 24), "gemma-3-4b": (34, 8)}

# A bench-only Streamlit app: the two grids of one case, drawn as images or as faceted Altair charts.
MINI_APP = textwrap.dedent('''
    import sys
    sys.path[:0] = [{root!r}, {root!r} + "/dashboard"]
    import streamlit as st
    from bench.attention import grid_arrays
    from charts.attention import faceted_grid, grid_image, png_bytes

    st.set_page_config(layout="wide")
    case, mode = st.query_params.get("case", "real12"), st.query_params.get("mode", "image")

    @st.cache_resource
    def arrays(case):
        return grid_arrays(case)

    @st.cache_data
    def png(case, i):
        return png_bytes(grid_image(arrays(case)[i], title=f"grid {{i}}"))

    if mode == "empty":  # Streamlit's own floor: an app that draws one line of text
        st.write("empty")
        st.stop()
    for i, (column, maps) in enumerate(zip(st.columns(2), arrays(case))):
        with column:
            if mode == "image":
                st.image(png(case, i), output_format="PNG")  # as the page does
            else:
                st.altair_chart(faceted_grid(maps))
''')

DRAWN_JS = """([images, charts, settled = true]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (settled && (!app || app.getAttribute('data-test-script-state') !== 'notRunning')) return false;
  const imgs = [...document.querySelectorAll('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img')];
  if (new Set(imgs).size < images || !imgs.every(i => i.complete && i.naturalWidth > 0)) return false;
  const vegas = [...document.querySelectorAll('.vega-embed')];
  const drawn = vegas.filter(v => [...v.querySelectorAll('canvas, svg.marks')].some(c => c.getBoundingClientRect().width > 0));
  return drawn.length >= charts;
}"""


def random_causal(layers: int, heads: int, T: int, seed: int = 0) -> np.ndarray:
    """Softmax of random scores with a first-token bonus (like real heads' sink), causal, float16."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((layers, heads, T, T), dtype=np.float32) * 1.5
    scores[..., 0] += 3.0
    scores[..., np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float16)  # (L, H, T, T)


def grid_arrays(case: str) -> list[np.ndarray]:
    """The two attention arrays of a bench case: 'embedded12' (real traces) or 'real12' / 'real128'."""
    if case == "embedded12":
        from core import load_model, run_trace

        return [run_trace(load_model(name), SHORT).attentions for name in ("smollm2-135m", "gemma-3-270m")]
    T = int(case.removeprefix("real"))
    return [random_causal(L, H, T, seed=i) for i, (L, H) in enumerate(REAL_SHAPES.values())]


# ---------------------------------------------------------------- in-process measurements


def _long_prompt() -> str:
    src = (ROOT / "dashboard" / "views" / "running" / "attention.py").read_text()
    namespace: dict = {}
    exec(src[src.index("LONG ="):src.index("PRESETS =")], namespace)  # the page's long preset
    return namespace["LONG"] + " " + namespace["LONG"]  # > 512 tokens; the trace keeps 512


def storage_rows(quick: bool) -> list[Row]:
    from charts.attention import grid_image, png_bytes
    from core import load_model, run_trace

    rows = []
    names = ["smollm2-135m"] if quick else ["smollm2-135m", "gemma-3-270m"]
    lengths = [12, 128] if quick else [12, 128, 512]
    long_prompt = _long_prompt()
    for name in names:
        lm = load_model(name)
        for T in lengths:
            prompt = SHORT if T == 12 else long_prompt
            trace = run_trace(lm, prompt, max_tokens=T)
            n = len(trace.tokens)
            case = f"{name}, {n} tokens, {trace.attentions.shape}"
            rows.append(Row("stored attention: float16 Trace vs float32 model output", case,
                            trace.attentions.nbytes / 1e6, trace.attentions.size * 4 / 1e6, "MB"))
            ids = torch.tensor([trace.token_ids.tolist()])

            def plain_forward():
                with lm.lock, torch.inference_mode():
                    lm.model(input_ids=ids, use_cache=False)

            repeat = 1 if quick or T == 512 else 3
            rows.append(Row("run_trace (all heads kept) vs plain forward", case,
                            timed(lambda: run_trace(lm, prompt, max_tokens=T), repeat), timed(plain_forward, repeat), "s"))
            png = png_bytes(grid_image(trace.attentions))
            rows.append(Row("grid PNG payload vs raw float16 weights", case, len(png) / 1e6,
                            trace.attentions.nbytes / 1e6, "MB", "a few MB"))
            rows.append(Row("grid PNG build time vs run_trace", case,
                            timed(lambda: png_bytes(grid_image(trace.attentions)), repeat),
                            timed(lambda: run_trace(lm, prompt, max_tokens=T), 1), "s"))
    return rows


# ---------------------------------------------------------------- browser measurements


def render_time(browser, url: str, images: int, charts: int, repeat: int, timeout_s: float = 90,
                shot: str | None = None, settled: bool = True) -> tuple[float, float]:
    """Best navigation -> fully drawn time (s) over `repeat` fresh tabs, and the JS heap (MB) of the last.

    Drawn = `images` images loaded and `charts` Vega charts painted, and (if `settled`) the script finished."""
    best, heap = float("inf"), float("nan")
    for _ in range(repeat):
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_function(DRAWN_JS, arg=[images, charts, settled], polling="raf", timeout=timeout_s * 1000)
            best = min(best, time.perf_counter() - start)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            heap = metrics.get("JSHeapUsedSize", float("nan")) / 1e6
            if shot:
                page.screenshot(path=shot)
        finally:
            page.close()
    return best, heap


def browser_rows(quick: bool, shots: Path | None = None) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, chromium_path, serve_app, wait_until_idle

    repeat = 1 if quick else 3
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        folder = Path(tempfile.mkdtemp(prefix="bench-attention-"))
        script = folder / "grids.py"
        script.write_text(MINI_APP.format(root=str(ROOT)))
        with serve_app(PORT, script=script) as base:
            render_time(browser, f"{base}/?mode=empty", 0, 0, 1, timeout_s=180)  # warm
            empty, _ = render_time(browser, f"{base}/?mode=empty", 0, 0, repeat)
            cases = [("embedded12", "embedded pair (30×9, 18×4) at 12 tokens", "<= 1.5 s"),
                     ("real12", "real shapes (28×24, 34×8), random weights, 12 tokens", "<= 1.5 s")]
            for case, label, target in cases:
                for mode in ("image", "facet"):  # warm the server caches (traces, PNGs, chart specs)
                    render_time(browser, f"{base}/?case={case}&mode={mode}", 2 * (mode == "image"),
                                2 * (mode == "facet"), 1, timeout_s=180)
                image, image_heap = render_time(browser, f"{base}/?case={case}&mode=image", 2, 0, repeat,
                                                shot=str(shots / f"{case}-image.png") if shots else None)
                facet, facet_heap = render_time(browser, f"{base}/?case={case}&mode=facet", 0, 2, repeat,
                                                shot=str(shots / f"{case}-facet.png") if shots else None)
                rows.append(Row("both grids drawn: one image each vs one faceted Altair chart each", label,
                                image, facet, "s", target))
                rows.append(Row("browser JS heap: images vs faceted charts", label, image_heap, facet_heap, "MB"))
            url = f"{base}/?case=real128&mode=image"
            render_time(browser, url, 2, 0, 1, timeout_s=180)  # warm
            image, _ = render_time(browser, url, 2, 0, repeat, shot=str(shots / "real128-image.png") if shots else None)
            rows.append(Row("both grids drawn as images vs target (faceted: cannot draw 5.5 M cells)",
                            "real shapes (28×24, 34×8), random weights, 128 tokens", image, 2.5, "s", "<= 2.5 s"))
            rows.append(Row("Streamlit floor: an empty app drawn vs target (machine load check)", "one line of text",
                            empty, 1.5, "s"))

        with serve_app(PORT) as base:  # the real page: up close + both grids + summaries
            warm = browser.new_page()
            warm.goto(base + "/")
            wait_until_idle(warm)
            warm.goto(base + "/attention")
            wait_until_idle(warm)
            warm.close()
            page_time, _ = render_time(browser, base + "/attention", 2, 4, repeat,
                                       shot=str(shots / "page.png") if shots else None)
            grids_time, _ = render_time(browser, base + "/attention", 2, 0, repeat, settled=False)
            rows.append(Row("/attention page: both grid images drawn vs target", "embedded pair, 12 tokens",
                            grids_time, 1.5, "s", "<= 1.5 s"))
            rows.append(Row("whole /attention page drawn (2 heads up close, 2 grids, 2 summaries) vs Streamlit floor",
                            "embedded pair, 12 tokens, warm caches", page_time, empty, "s"))
        browser.close()
    return rows


WATCH_STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__states = [];
  new MutationObserver(() => window.__states.push([performance.now(), app.getAttribute('data-test-script-state')]))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  window.__clicked = performance.now();
}"""
RERUN_DONE_JS = """() => {
  const s = window.__states, i = s.findIndex(e => e[1] === 'running');
  const done = i >= 0 && s.slice(i).find(e => e[1] === 'notRunning');
  return done ? done[0] - window.__clicked : false;
}"""


def rerun_time(browser, base: str, repeat: int) -> float:
    """Best click -> script finished (s) for the 'Log colour scale' toggle on /attention (warm caches)."""
    from tests.browser import wait_until_idle

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto(base + "/attention")
        wait_until_idle(page)
        times = []
        for _ in range(repeat + 2):  # both colour scales drawn once, so every measured run is cached
            toggle = page.get_by_text("Log colour scale", exact=True)
            toggle.hover()
            page.evaluate(WATCH_STATE_JS)
            toggle.click()
            times.append(page.wait_for_function(RERUN_DONE_JS, timeout=90_000).json_value() / 1000)
            wait_until_idle(page)
        return min(times[2:])
    finally:
        page.close()


def server_setting_rows(quick: bool) -> list[Row]:
    """Why .streamlit/config.toml turns off two Streamlit defaults, measured with each default back on.

    fileWatcherType: a new session's watcher walks every imported module before the first page is drawn.
    postScriptGC: a full gc.collect() after every run walks every object of torch/transformers holding the GIL.
    """
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, chromium_path, serve_app, wait_until_idle

    repeat = 2 if quick else 5
    settings = {"ours": {}, "default": {"STREAMLIT_SERVER_FILE_WATCHER_TYPE": "auto",
                                        "STREAMLIT_RUNNER_POST_SCRIPT_GC": "true"}}
    first_visit, rerun = {}, {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        for name, env in settings.items():
            with serve_app(PORT, env=env) as base:
                warm = browser.new_page()
                warm.goto(base + "/attention")
                wait_until_idle(warm)
                warm.close()
                first_visit[name], _ = render_time(browser, base + "/attention", 2, 4, repeat)
                rerun[name] = rerun_time(browser, base, repeat)
        browser.close()
    case = "/attention, embedded pair, 12 tokens, warm caches"
    return [Row("new visitor, page drawn: our server settings vs Streamlit's defaults", case,
                first_visit["ours"], first_visit["default"], "s"),
            Row("rerun after a click (toggle → script finished): ours vs Streamlit's defaults", case,
                rerun["ours"], rerun["default"], "s")]


def measure(quick: bool) -> list[Row]:
    shots = Path(tempfile.mkdtemp(prefix="bench-attention-shots-"))
    rows = storage_rows(quick) + browser_rows(quick, shots) + server_setting_rows(quick)
    print(f"screenshots: {shots}", flush=True)
    return rows


if __name__ == "__main__":
    from bench.common import main

    main(measure)
