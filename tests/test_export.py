"""Figure and table downloads (dashboard/export.py): every file parses and carries its provenance.

Fast tier: the file builders on small charts. App tier: one AppTest visit of every page (embedded
pair) that checks a PNG and an SVG button under every chart and renders every figure the page drew.
"""

from __future__ import annotations

import io
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))

import export  # noqa: E402

PROV = export.Provenance(
    page="Logit lens",
    models=("Model A: smollm2-135m (embedded; float32; cpu)", "Model B: gemma-3-270m (embedded; float32; cpu)"),
    settings=(("lens_prompt", "The capital of France is\nParis & <b>"), ("k", "5")),
    date="2026-11-30 10:00 UTC", version="abc1234-dirty",
    url="http://localhost:8501/logit_lens?lens_prompt=The+capital&k=5",
)
SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_text(svg: str) -> str:
    """All text drawn in an SVG (the footer lines are wrapped, so they are joined back with spaces)."""
    root = ET.fromstring(svg)
    return " ".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))


def assert_provenance_in_svg(svg: str, prov: export.Provenance) -> None:
    root = ET.fromstring(svg)  # parses as XML
    metadata = json.loads(root.find(f"{SVG_NS}metadata").text)
    assert metadata == prov.as_dict()
    drawn = "".join(svg_text(svg).split())
    for line in prov.lines(max_value=300):  # the visible footer: every fact, wrapped to the chart's width
        assert "".join(line.split()) in drawn, line


def svg_size(svg: str) -> tuple[float, float]:
    root = ET.fromstring(svg)
    return float(root.get("width")), float(root.get("height"))


def line_chart() -> alt.Chart:
    frame = pd.DataFrame({"layer": np.arange(10), "cosine": np.linspace(1, 0.2, 10)})
    return alt.Chart(frame).mark_line().encode(x="layer:Q", y="cosine:Q").properties(width=320, height=200)


def test_chart_svg_and_png_carry_the_provenance_at_twice_the_size():
    svg = export.chart_svg(line_chart(), PROV)
    assert_provenance_in_svg(svg, PROV)
    assert "0.2" in svg_text(svg) or "0.4" in svg_text(svg)  # the chart itself is drawn (its axis labels)
    width, height = svg_size(svg)
    png = Image.open(io.BytesIO(export.svg_to_png(svg, PROV)))
    assert png.format == "PNG"
    assert png.size == (round(2 * width), round(2 * height))
    assert png.text["Description"] == "\n".join(PROV.lines())
    assert png.text["Source"] == PROV.url
    # the footer is drawn: the bottom strip of the picture is not blank white
    footer = np.asarray(png.convert("L"))[-int(20 * 2):, :]
    assert (footer < 128).any()


def test_a_vega_lite_dict_that_fills_its_column_gets_a_fixed_width():
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v6.json", "width": "container",
            "data": {"values": [{"x": "a", "y": 1}, {"x": "b", "y": 3}]},
            "mark": "bar", "encoding": {"x": {"field": "x", "type": "nominal"}, "y": {"field": "y", "type": "quantitative"}}}
    svg = export.chart_svg(spec, PROV)
    assert_provenance_in_svg(svg, PROV)
    assert svg_size(svg)[0] >= export.EXPORT_WIDTH
    assert spec["width"] == "container"  # the page's own spec (a cached object) is left alone


def test_csv_has_the_provenance_as_comments_and_reads_back_exactly():
    table = pd.DataFrame({"token": ["#", "a#b", "x,y", 'say "hi"', "Paris"], "prob": [0.5, 0.25, 1e-9, 0.0, 1 / 3],
                          "rank": [1, 2, 3, 4, 5]})
    data = export.csv_bytes(table, PROV, "logit_lens_A").decode("utf-8")
    comments = [line[2:] for line in data.splitlines() if line.startswith("# ")]
    assert comments == ["logit_lens_A", *PROV.lines()]
    back = pd.read_csv(io.StringIO(data), comment="#")
    pd.testing.assert_frame_equal(back, table)  # "#" inside a cell survives (quoted), floats round-trip


def test_a_raster_figure_is_wrapped_in_svg_with_the_same_pixels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(30, 50, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    svg = export.image_svg(buffer.getvalue(), PROV)
    assert_provenance_in_svg(svg, PROV)
    href = ET.fromstring(svg).find(f".//{SVG_NS}image").get("href")
    embedded = Image.open(io.BytesIO(__import__("base64").b64decode(href.split(",", 1)[1])))
    assert np.array_equal(np.asarray(embedded), pixels)
    png = Image.open(io.BytesIO(export.svg_to_png(svg, PROV))).convert("RGB")
    # nearest-neighbour at 2x: the top-left 2x2 block is the first pixel, exactly
    assert np.array_equal(np.asarray(png)[:2, :2].reshape(-1, 3), np.repeat(pixels[:1, :1].reshape(1, 3), 4, 0))


def test_long_prompts_are_cut_in_the_footer_but_whole_in_the_csv():
    long = export.Provenance("Logit lens", ("Model A: x",), (("lens_prompt", "word " * 4000),), "d", "v", "u")
    assert "characters; full text in the URL" in " ".join(long.lines(max_value=300))
    data = export.csv_bytes(pd.DataFrame({"x": [1]}), long).decode()
    assert ("word " * 3999).strip() in data


# ---------------------------------------------------------------- every page (AppTest)


def walk(block):
    """Elements of an AppTest block in page order."""
    for child in block.children.values():
        if hasattr(child, "children") and child.type not in ("download_button",):
            yield from walk(child)
        else:
            yield child


def page_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT / "dashboard")) for p in (ROOT / "dashboard" / "views").rglob("*.py"))


@pytest.mark.app
@pytest.mark.embedded
def test_every_chart_of_every_page_has_png_and_svg_downloads_that_parse(monkeypatch):
    from tests.apptest import ENTRY, assert_clean
    from streamlit.testing.v1 import AppTest

    import vl_convert

    renders = []  # nothing may be rendered while a page runs: only a click renders
    for name in ("vegalite_to_svg", "svg_to_png"):
        original = getattr(vl_convert, name)
        monkeypatch.setattr(vl_convert, name, lambda *a, _f=original, _n=name, **k: renders.append(_n) or _f(*a, **k))
    app = AppTest.from_file(ENTRY, default_timeout=600)
    app.run()
    checked = {}
    for file in page_files():
        app.switch_page(file).run()
        assert_clean(app)
        assert renders == [], (file, renders)
        elements = list(walk(app.main))
        kinds = [e.type for e in elements]
        charts = [i for i, kind in enumerate(kinds) if kind in ("vega_lite_chart", "image")]
        for i in charts:  # the next two download buttons after a chart are its PNG and SVG
            after = [e.proto.label for e in elements[i + 1:] if e.type == "download_button"][:2]
            assert after == ["PNG (2×)", "SVG"], (file, i, after)
        items = app.session_state[export.ITEMS_KEY]
        figures = [item for item in items if item.kind != "table"]
        assert len(figures) == len(charts), file  # every chart drawn went through export
        for n, item in enumerate(figures):
            svg = export.image_svg(item.png, item.prov) if item.kind == "image" else export.chart_svg(item.chart, item.prov)
            assert_provenance_in_svg(svg, item.prov)
            assert item.prov.page == app.session_state[export.PAGE_KEY][0]
            assert "Model A: smollm2-135m" in item.prov.models[0]
            if n == 0:  # one PNG per page: the rendering is the same code path for every chart
                png = Image.open(io.BytesIO(export.svg_to_png(svg, item.prov)))
                width, height = svg_size(svg)
                assert png.size == (round(2 * width), round(2 * height))
        for item in items:
            if item.kind == "table" or item.table is not None:
                back = pd.read_csv(io.BytesIO(export.csv_bytes(item.table, item.prov)), comment="#")
                assert back.shape == item.table.shape, (file, item.name)
        checked[file] = len(charts)
        del renders[:]  # the page's own rendering above is not a page run
    assert sum(checked.values()) >= 15, checked  # the pages of the lecture draw charts; none was skipped
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?|.*-g[0-9a-f]+(-dirty)?|unknown.*", export.app_version())


def test_presentation_style_enlarges_and_recolours_without_touching_the_data():
    import theme
    from charts.vocabulary import overlap_chart

    counts = pd.DataFrame({"where": ["only in A", "shared", "only in B"], "tokens": [3, 46, 216]})
    plain = export.altair_dict(overlap_chart(counts))
    styled = theme.presentation_spec(plain)
    assert styled["config"]["axis"]["labelFontSize"] == theme.LABEL > 11  # Vega's default is 10
    assert styled["encoding"]["color"]["scale"]["range"] == theme.OKABE_ITO[:3]
    assert styled["datasets"] == plain["datasets"]  # same numbers
    heat = {"mark": "rect", "data": {"values": [{"x": 0, "p": 0.1}, {"x": 1, "p": 0.9}]},
            "encoding": {"x": {"field": "x", "type": "ordinal"},
                         "color": {"field": "p", "type": "quantitative", "scale": {"scheme": "blues"}}}}
    scale = theme.presentation_spec(heat)["encoding"]["color"]["scale"]
    assert scale == {"scheme": "cividis", "reverse": True}  # high values stay the dark end
    svg = export.chart_svg(styled, PROV)
    colours = {c.lower() for c in re.findall(r'fill="(#[0-9a-fA-F]{6})"', svg)}
    assert {c.lower() for c in theme.OKABE_ITO[:3]} <= colours  # the bars are drawn in Okabe–Ito


def test_control_characters_in_labels_export_instead_of_aborting_the_server():
    """A byte token such as '\\x11' used to reach vl-convert as a text label: its Rust code panicked on
    the non-XML character and aborted the process (the dashboard server of every session). Run in a
    child process so that a regression fails this test instead of killing the test session."""
    import subprocess

    code = f"""
import sys, xml.etree.ElementTree as ET
sys.path.insert(0, {str(ROOT / "dashboard")!r})
import altair as alt, pandas as pd, export
from charts.lens import visible
tokens = [chr(c) + "x" for c in range(32)] + ["\\x7f"]
chart = alt.Chart(pd.DataFrame({{"token": tokens, "v": range(len(tokens))}})).mark_text().encode(
    text="token:N", y="v:O", tooltip="token:N").properties(title="a\\x11title")
prov = export.Provenance("Test", ("Model A: a",), (("k", "v\\x11"),), "2026-12-03", "v1", "http://x")
svg = export.chart_svg(chart, prov)
ET.fromstring(svg)
assert "\\u2411x" in svg, "\\x11 is drawn as its control picture"
assert export.chart_png(chart, prov)[:4] == b"\\x89PNG"
assert all(ord(c) >= 32 and c != "\\x7f" for t in tokens for c in visible(t))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
