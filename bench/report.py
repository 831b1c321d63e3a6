"""Exported report (dashboard/report.py): size of the HTML file and time to build it.

Rows:
- every page in one report, built as "Export report" builds it for pages the user has not open:
  a child process runs each page headless (AppTest, embedded pair, default inputs) and renders its
  figures to SVG. Time: the whole build vs the child's page runs alone (what rendering and writing
  add). Size: the file vs its inline SVG figures alone (what tables, provenance and HTML add).
- the current page only (the fast path: its figures are already recorded by its last run),
  rendered to a report vs the page's own run.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from bench.common import Row, main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))


def _pages() -> list[str]:
    import ast

    tree = ast.parse((ROOT / "dashboard" / "Home.py").read_text())
    files = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
             and isinstance(node.value, str) and node.value.startswith("views/") and node.value.endswith(".py")]
    return [f for f in dict.fromkeys(files) if (ROOT / "dashboard" / f).exists()]


def _svg_bytes(html: str) -> int:
    return sum(len(m.encode("utf-8")) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S))


def measure(quick: bool = False) -> list[Row]:
    import report

    files = _pages()[:3] if quick else _pages()
    case = f"embedded pair, {len(files)} pages, default inputs"
    ran = []
    start = time.perf_counter()
    sections = report.run_pages_headless(files, {}, timings=ran)
    html = report.report_html(sections, "bench")
    total = time.perf_counter() - start
    figures = html.count('<figure class="figure">')
    rows = [
        Row("report: build time, all pages headless vs their page runs alone", f"{case}, {figures} figures",
            total, sum(ran), "s", "progress bar shown"),
        Row("report: file size vs its inline SVG figures", f"{case}, {figures} figures",
            len(html.encode()) / 1e6, _svg_bytes(html) / 1e6, "MB", "a few MB"),
    ]

    from streamlit.testing.v1 import AppTest

    import export

    app = AppTest.from_file(str(ROOT / "dashboard" / "Home.py"), default_timeout=600)
    app.run()
    app.switch_page("views/running/similarity.py").run()  # warm: models loaded, trace cached
    start = time.perf_counter()
    app.run()
    page_run = time.perf_counter() - start
    items = app.session_state[export.ITEMS_KEY]
    start = time.perf_counter()
    one = report.report_html([("Contextual similarity", report.page_section("Contextual similarity", items, 0))],
                             "bench")
    render = time.perf_counter() - start
    rows.append(Row("report: current page only (its recorded figures) vs the page's own run",
                    f"similarity, {len(items)} items, {len(one.encode()) / 1e6:.2f} MB", render, page_run, "s"))
    return rows


if __name__ == "__main__":
    main(measure)
