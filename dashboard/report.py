""""Export report": one self-contained HTML file of the pages a user ticks.

Every figure is inline SVG (rendered by vl-convert, as the downloads are; raster figures are the
same PNG wrapped in SVG), every table is an HTML table, and each page gives its provenance and the
link that reopens the same view. Nothing is fetched when the file is opened: no script, no font, no
stylesheet from the network.

Where the pages come from:
- the page the user is on: what its last run drew (export.py records every figure and table);
- every other ticked page: run headless with the same URL state (models, inputs, presentation
  mode) by streamlit.testing.v1.AppTest in a child process (`python dashboard/report.py`).
  A child process, because AppTest swaps Streamlit's process-wide Runtime singleton and config
  for a mock while it runs: inside the server that would break every other visitor's session for
  that time. The cost: the child loads the two models again (from the local cache; seconds for the
  embedded pair, and the same memory again for large models).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "Home.py"
MAX_TABLE_ROWS = 2000  # rows shown per table; the full table rides along as an embedded CSV link
RESULT_KEY = "_report_file"
BASE_URL_ENV = "LMSBS_BASE_URL"  # scheme://host:port of the server, for the links of headless pages

CSS = """
body { font-family: sans-serif; margin: 2rem auto; max-width: 1400px; color: #111; }
section { border-top: 2px solid #888; margin-top: 2rem; }
pre.prov { background: #f4f4f4; padding: .6rem; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85rem; }
figure { margin: 1.2rem 0; overflow-x: auto; }
figcaption, summary { font-weight: bold; margin-bottom: .4rem; }
table { border-collapse: collapse; font-size: .85rem; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.wrap { overflow-x: auto; max-height: 32rem; }
"""


# ---------------------------------------------------------------- HTML (pure functions)


def _unique_ids(svg: str, prefix: str) -> str:
    """Prefix every id of one SVG: Vega names its clip paths clip1, clip2… in every file, and inline
    SVGs in one HTML document share a single id space (a second `clip1` would use the first's shape)."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{prefix}-{old}"
        svg = svg.replace(f'id="{old}"', f'id="{new}"').replace(f"url(#{old})", f"url(#{new})")
        svg = svg.replace(f'href="#{old}"', f'href="#{new}"')
    return svg


LEAN_ABOVE = 300_000  # bytes of SVG: a figure of thousands of marks (weight heatmaps)
MARK_LABELS = re.compile(r' (?:aria-label|aria-roledescription|role)="[^"]*"')


def _lean(svg: str) -> str:
    """A big figure without its per-mark accessibility labels ("row: 3; col: 7; value: 0.012" on each
    of 10,000 cells is two thirds of a weight heatmap's SVG). The drawing is the same; the SVG
    download and the table's CSV keep every number."""
    return MARK_LABELS.sub("", svg) if len(svg) > LEAN_ABOVE else svg


def _exact(value: float) -> str:
    """Every digit of a float (pandas would print 6 decimals): the report shows the page's numbers."""
    return repr(float(value))


def table_html(table: pd.DataFrame, name: str) -> str:
    shown = table.head(MAX_TABLE_ROWS)
    note = "" if len(table) <= MAX_TABLE_ROWS else f" — first {MAX_TABLE_ROWS:,} of {len(table):,} rows"
    csv_link = base64.b64encode(table.to_csv(index=False).encode("utf-8")).decode("ascii")
    return (f'<details open class="table"><summary>{html.escape(name)} ({len(table):,} rows{note})</summary>'
            f'<div class="wrap">{shown.to_html(index=False, border=0, na_rep="", float_format=_exact)}</div>'
            f'<a download="{html.escape(name)}.csv" href="data:text/csv;base64,{csv_link}">CSV of this table</a>'
            f"</details>")


def page_section(title: str, items: list, number: int, error: str | None = None) -> str:
    """One page of the report: link, provenance, every figure (inline SVG) and every table."""
    import export

    parts = [f'<section><h2>{html.escape(title)}</h2>']
    if items:
        prov = items[0].prov
        parts.append(f'<p><a href="{html.escape(prov.url)}">Reopen this view</a></p>')
        parts.append(f'<pre class="prov">{html.escape(chr(10).join(prov.lines()))}</pre>')
    if error:
        parts.append(f'<p class="error">{html.escape(error)}</p>')
    shown_tables = set()
    for i, item in enumerate(items):
        if item.kind == "table":
            continue
        svg = export.image_svg(item.png, item.prov) if item.kind == "image" else export.chart_svg(item.chart, item.prov)
        parts.append(f'<figure class="figure"><figcaption>{html.escape(item.name)}</figcaption>'
                     f"{_unique_ids(_lean(svg), f'p{number}f{i}')}</figure>")
        if item.table is not None:
            parts.append(table_html(item.table, item.name))
            shown_tables.add(id(item.table))
    for item in items:
        if item.kind == "table" and id(item.table) not in shown_tables:
            parts.append(table_html(item.table, item.name))
    if not items and not error:
        parts.append("<p>This page drew no figure or table with these inputs.</p>")
    parts.append("</section>")
    return "".join(parts)


def report_html(sections: list[tuple[str, str]], version: str) -> str:
    """The whole file from (title, section html) pairs."""
    built = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    toc = "".join(f'<li><a href="#page-{i}">{html.escape(title)}</a></li>' for i, (title, _) in enumerate(sections))
    body = "".join(f'<div id="page-{i}">{section}</div>' for i, (_, section) in enumerate(sections))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Two language models, side by side'
            f" — report</title><style>{CSS}</style></head><body><h1>Two language models, side by side — report</h1>"
            f"<p>Built {html.escape(built)} · app version {html.escape(version)}</p><ol>{toc}</ol>{body}</body></html>")


# ---------------------------------------------------------------- headless pages (child process)


def run_pages_headless(files: list[str], query: dict[str, str], progress=None,
                       timings: list | None = None, base_url: str | None = None) -> list[tuple[str, str]]:
    """Run `files` (e.g. "views/running/attention.py") in a child process; returns (title, section html) pairs.

    `progress(fraction, text)` is called as each page finishes; `timings` (a list) receives the
    seconds each page run took in the child, rendering excluded (for the benchmark).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sections.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--query", json.dumps(query),
                   "--out", str(out), *files]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if base_url:  # the links in the child's pages point at this server, not a guess
            env[BASE_URL_ENV] = base_url
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=str(HERE.parent)) as child:
            for line in child.stdout:  # "loaded" once the models are in, then "done i n seconds title" per page
                if line.startswith("loaded") and progress is not None:
                    progress(0.0, f"Models loaded; running {len(files)} page(s)…")
                if line.startswith("done "):
                    _, i, n, seconds, title = line.rstrip("\n").split(" ", 4)
                    if progress is not None:
                        progress(int(i) / int(n), f"Ran {title}")
                    if timings is not None:
                        timings.append(float(seconds))
            errors = child.stderr.read()
        if child.returncode != 0 or not out.exists():
            raise RuntimeError(f"The headless page run failed: {errors.strip()[-2000:]}")
        return [tuple(pair) for pair in json.loads(out.read_text())]


def _child(files: list[str], query: dict[str, str], out: Path) -> None:
    """Child process: run each page through the entry script with the URL state, render its items."""
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from streamlit.testing.v1 import AppTest

    import export

    app = AppTest.from_file(str(ENTRY), default_timeout=900)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    print("loaded", flush=True)
    sections = []
    for i, file in enumerate(files):
        start = time.perf_counter()
        app.switch_page(file).run()
        seconds = time.perf_counter() - start
        title, _ = app.session_state[export.PAGE_KEY]
        items = app.session_state[export.ITEMS_KEY] if export.ITEMS_KEY in app.session_state else []
        error = "; ".join(str(e.value) for e in app.exception) or None
        sections.append((title, page_section(title, items, i + 1, error)))
        print(f"done {i + 1} {len(files)} {seconds:.3f} {title}", flush=True)
    out.write_text(json.dumps(sections))


# ---------------------------------------------------------------- the sidebar control


def build(current_title: str, pages: list[tuple[str, str]], chosen: list[str], progress) -> bytes:
    """The report of `chosen` page titles: the current page from its last run, the others headless."""
    import streamlit as st

    import export

    query = dict(st.query_params.to_dict())
    sections: dict[str, str] = {}
    last_title, _ = st.session_state.get(export.PAGE_KEY, ("", ""))
    if current_title in chosen and last_title == current_title:
        sections[current_title] = page_section(current_title, export.page_items(), 0)
    others = [(file, title) for file, title in pages if title in chosen and title not in sections]
    if others:
        headless = run_pages_headless([file for file, _ in others], query,
                                      lambda f, text: progress(0.1 + 0.8 * f, text), base_url=export.server_url())
        sections.update(dict(headless))
    progress(0.95, "Writing the file")
    ordered = [(title, sections[title]) for _, title in pages if title in sections]
    return report_html(ordered, export.app_version()).encode("utf-8")


def sidebar(pages: list[tuple[str, str]], current_title: str) -> None:
    """"Export report" in the sidebar: tick pages (default: this one), build, download.

    Called by the entry script before the page runs, so the current page's figures are those of
    its previous run, which shows the same view (clicking Build changes no input).
    """
    import streamlit as st

    with st.sidebar.expander("Export report", icon=":material/summarize:"):
        titles = [title for _, title in pages]
        chosen = st.multiselect("Pages in the report", titles, default=[current_title] if current_title in titles
                                else [], key=f"report_pages_{current_title}")
        if st.button("Build report", key="report_build", disabled=not chosen, width="stretch"):
            bar = st.progress(0.0, text="Collecting figures…")
            start = time.perf_counter()
            try:
                data = build(current_title, pages, chosen, lambda f, text: bar.progress(min(f, 1.0), text=text))
                st.session_state[RESULT_KEY] = (data, time.perf_counter() - start)
            except RuntimeError as error:
                st.error(str(error))
            bar.empty()
        if RESULT_KEY in st.session_state:
            data, seconds = st.session_state[RESULT_KEY]
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
            st.download_button(f"Download report ({len(data) / 1e6:.2f} MB, built in {seconds:.0f} s)", data,
                               file_name=f"lm-side-by-side-report-{stamp}.html", mime="text/html",
                               key="report_download", icon=":material/download:", on_click="ignore")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run dashboard pages headless and render report sections.")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--query", default="{}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _child(args.files, json.loads(args.query), Path(args.out))
