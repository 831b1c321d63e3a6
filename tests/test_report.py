"""Exported report (dashboard/report.py): one self-contained HTML file of the ticked pages.

Checks the file's content against what the pages drew: pages ticked but never opened are run
headless in a child process with the same URL state (tiny random models here), and every figure
they drew is in the file as inline SVG with its provenance. The real-browser test that opens the
file with the network blocked is in tests/test_browser.py.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import altair as alt
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))

import export  # noqa: E402
import report  # noqa: E402

PROV = export.Provenance("Contextual similarity", ("Model A: a", "Model B: b"), (("sim_word", "apple"),),
                         "2026-11-30", "v1", "http://localhost:8501/similarity?sim_word=apple")


class Collect(HTMLParser):
    """Tags and attributes of an HTML file, to find anything that would be fetched from outside."""

    def __init__(self):
        super().__init__()
        self.tags, self.external = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and re.match(r"(https?:)?//", value) \
                    and tag != "a":  # a link is followed only when clicked; nothing is loaded for it
                self.external.append((tag, name, value))


class Tables(HTMLParser):
    """Every <table> of an HTML file as a DataFrame of strings (header row = columns)."""

    def __init__(self):
        super().__init__()
        self.tables, self.row, self.cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.row = []
            self.tables[-1].append(self.row)
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.row.append(self.cell.strip())
            self.cell = None

    def frames(self) -> list[pd.DataFrame]:
        return [pd.DataFrame(rows[1:], columns=rows[0]) for rows in self.tables]


def inline_svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>(?=</figure>)", html, flags=re.S)


def test_report_holds_every_figure_and_table_inline():
    frame = pd.DataFrame({"layer": [0, 1, 2], "cosine": [1.0, 0.8, 1 / 3], "pair": ["#1", "#1", "#1"]})
    chart = alt.Chart(frame).mark_line().encode(x="layer:Q", y="cosine:Q")
    items = [export.Item("chart", "curves", PROV, chart=chart, table=frame),
             export.Item("chart", "curves_2", PROV, chart=chart),
             export.Item("table", "tokens", PROV, table=frame.assign(token=["<a>", "b", "c"]))]
    html = report.report_html([("Contextual similarity", report.page_section("Contextual similarity", items, 0))], "v1")
    parsed = Collect()
    parsed.feed(html)
    assert not parsed.external and "script" not in parsed.tags and "link" not in parsed.tags
    svgs = inline_svgs(html)
    assert len(svgs) == 2
    ids = [i for svg in svgs for i in re.findall(r'\bid="([^"]+)"', svg)]
    assert len(ids) == len(set(ids))  # Vega's clip-path ids made unique across the figures
    for svg in svgs:
        ET.fromstring(svg)
    parser = Tables()
    parser.feed(html)
    tables = parser.frames()
    assert len(tables) == 2
    pd.testing.assert_frame_equal(tables[0], frame.astype(str))  # every digit: 0.3333333333333333
    assert list(tables[1]["token"]) == ["<a>", "b", "c"]  # escaped in the HTML, read back as typed
    assert 'href="http://localhost:8501/similarity?sim_word=apple"' in html
    for line in PROV.lines():
        assert __import__("html").escape(line) in html


@pytest.mark.app
def test_pages_not_opened_are_run_headless_with_the_same_url_state(tiny_folders):
    query = {"a": str(tiny_folders["llama"]), "b": str(tiny_folders["gemma3"]), "sim_word": "apple",
             "sim_sentences": "I ate an apple\nThe company apple sells phones", "present": "1"}
    progress = []
    sections = report.run_pages_headless(["views/weights/architecture.py", "views/running/similarity.py"], query,
                                         progress=lambda f, text: progress.append((f, text)))
    assert [title for title, _ in sections] == ["Architecture", "Contextual similarity"]
    assert [f for f, _ in progress] == [0.0, 0.5, 1.0]
    architecture, similarity = (section for _, section in sections)
    for section in (architecture, similarity):
        link = re.search(r'<a href="([^"]+)">Reopen this view</a>', section).group(1)
        reopened = parse_qs(urlsplit(link.replace("&amp;", "&")).query)
        assert {k: v[0] for k, v in reopened.items() if k in query} == query
        assert str(tiny_folders["llama"]) in section and str(tiny_folders["gemma3"]) in section
        assert 'class="error"' not in section
    # The architecture page draws a component chart plus, per model, three weight charts.
    assert architecture.count('<figure class="figure">') == 7
    svg = inline_svgs(similarity)
    assert len(svg) == 1
    root = ET.fromstring(svg[0])
    drawn = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "sim_word = apple" in drawn
    # presentation mode travelled with the URL: the Okabe–Ito orange is the first curve's colour
    assert "#E69F00".lower() in svg[0].lower()


def test_big_figures_keep_every_mark_but_drop_per_mark_labels():
    import numpy as np

    cells = pd.DataFrame([(r, c, float(np.sin(r * c))) for r in range(60) for c in range(60)],
                         columns=["row", "col", "value"])
    heat = alt.Chart(cells).mark_rect().encode(x="col:O", y="row:O", color="value:Q")
    svg = export.chart_svg(export.altair_dict(heat), PROV)
    lean = report._lean(svg)
    assert len(svg) > report.LEAN_ABOVE and len(lean) < len(svg) / 2
    marks = re.compile(r"<path\b")
    assert len(marks.findall(lean)) == len(marks.findall(svg)) >= 3600  # every cell is still drawn
    ET.fromstring(lean)
    small = export.chart_svg(alt.Chart(cells.head(3)).mark_bar().encode(x="col:O", y="value:Q"), PROV)
    assert report._lean(small) == small  # small figures keep their labels
