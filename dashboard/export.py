"""Figures and tables that leave the page: PNG / SVG / CSV downloads, each with its provenance.

Every page draws its charts through this module instead of st.altair_chart / st.vega_lite_chart:

    export.show_chart(chart, "similarity_curves", table=table, settings={"layer": 3})
    export.show_vega_lite(spec, "logit_lens_grid_A", table=table, settings={...})
    export.show_image(png_bytes, "attention_grid_A", settings={...})
    export.download_csv(table, "parameters_A.csv")           # ui.download_csv delegates here

Under each chart come downloads: PNG at 2x scale (for slides), SVG, and a CSV of `table` when one is
given. The images are rendered on the server by Vega-Lite itself, through vl-convert (the same
renderer as Altair's `chart.save(..., format="png")`), with no browser; nothing is rendered until
the button is clicked (st.download_button with a data callable and on_click="ignore").

Provenance (what produced the numbers) goes with every file:
- models A and B: what was picked, where it came from, dtype, device;
- the page, its inputs (prompt...) and settings: the page's `settings` dict over its URL inputs;
- the date, the app version (`git describe --always --dirty`), and the URL that reopens the view.
Figures carry it as a footer drawn under the chart (and as SVG <metadata> / PNG text chunks);
CSVs carry it as `# ` comment lines on top, which `pandas.read_csv(f, comment="#")` skips. String
cells are quoted, because pandas' comment character also cuts a line at an unquoted "#" in a cell.

Each call also records the figure or table for the page's report (see report.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import os
import re
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import escape

import altair as alt
import pandas as pd
import streamlit as st

REPO = Path(__file__).resolve().parents[1]
MODEL_KEYS = {"a", "b", "a_weights", "b_weights", "dtype_a", "dtype_b", "place_a", "place_b", "present",
              "ndif_a", "ndif_b", "ndif_url_a", "ndif_url_b", "ndif_repo_a", "ndif_repo_b"}  # URL keys that pick
# the models (or the style): given by the model lines, not repeated as page inputs
ITEMS_KEY = "_export_items"  # session_state: what this page run drew, for the report
PAGE_KEY = "_export_page"  # session_state: (title, url_path) of the page being run
EXPORT_WIDTH = 640  # px, for charts that stretch to their column on the page (no width of their own)
FOOTER_FONT = 11  # px


# ---------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    """What produced a figure or table, as plain text lines."""

    page: str
    models: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    date: str
    version: str
    url: str

    def lines(self, max_value: int | None = None) -> list[str]:
        """One line per fact. `max_value` cuts long values (figure footers); CSVs keep them whole."""

        def cut(text: str) -> str:
            text = " ".join(str(text).split())  # one line: newlines in a prompt become spaces
            if max_value is not None and len(text) > max_value:
                return f"{text[:max_value]}… ({len(text):,} characters; full text in the URL)"
            return text

        inputs = "; ".join(f"{name} = {cut(value)}" for name, value in self.settings) or "(none)"
        return [f"Page: {self.page}", *self.models, f"Inputs and settings: {inputs}",
                f"Date: {self.date}", f"App version: {self.version}", f"URL: {self.url}"]

    def as_dict(self) -> dict:
        return {"page": self.page, "models": list(self.models), "settings": dict(self.settings),
                "date": self.date, "version": self.version, "url": self.url}


@functools.lru_cache(maxsize=1)
def app_version() -> str:
    """`git describe --always --dirty` of this checkout, else a fixed fallback (a copy without .git)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (not a git checkout)"


def _model_line(slot) -> str:
    if slot.lm is None:
        state = "not shown" if slot.notice else "not loaded"
        return f"Model {slot.label}: {slot.key.source or '(none)'} ({state}: {slot.error})"
    lm = slot.lm
    where = f"{lm.source.kind} {lm.source.location}" + (", GGUF dequantized" if lm.dequantized_from_gguf else "")
    weights = "" if lm.has_weights else ", config only"
    dtype = str(lm.dtype).removeprefix("torch.")
    remote = getattr(lm, "remote", None)  # a model on NDIF: where it runs (Target.describe never holds the key)
    runs = f"; runs on {remote.target.describe()}" if remote is not None else ""
    return f"Model {slot.label}: {slot.key.source} ({where}; {dtype}; {lm.device}{weights}{runs})"


def _browser_url() -> str:
    try:
        return st.context.url or ""
    except Exception:  # no browser behind this run (AppTest, the report's headless pages)
        return ""


def server_url() -> str:
    """scheme://host:port of this server as the browser reaches it; for headless runs, the one
    the report builder passed down (LMSBS_BASE_URL), else Streamlit's default address."""
    parts = urlsplit(_browser_url())
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return os.environ.get("LMSBS_BASE_URL", "http://localhost:8501")


def page_url(query: dict[str, str] | None = None) -> str:
    """The URL of the current view: this page's address with the current query string."""
    query = dict(st.query_params.to_dict()) if query is None else query
    base = _browser_url()
    if not base:
        _, path = st.session_state.get(PAGE_KEY, ("", ""))
        base = f"{server_url()}/{path}"
    parts = urlsplit(base)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"{base}?{urlencode(query)}" if query else base


def provenance(settings: dict | None = None) -> Provenance:
    """Provenance of the current page run: the page's `settings` over its URL inputs."""
    query = dict(st.query_params.to_dict())
    inputs = {k: v for k, v in query.items() if k not in MODEL_KEYS}
    inputs.update({str(k): v for k, v in (settings or {}).items()})
    slots = st.session_state.get("_slots") or []
    title, _ = st.session_state.get(PAGE_KEY, ("", ""))
    return Provenance(
        page=title or "(unknown page)",
        models=tuple(_model_line(slot) for slot in slots) or ("Models: (none loaded)",),
        settings=tuple((k, str(v)) for k, v in inputs.items()),
        date=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        version=app_version(),
        url=page_url(query),
    )


# ---------------------------------------------------------------- files (pure functions)


def csv_bytes(table: pd.DataFrame, prov: Provenance, name: str = "") -> bytes:
    """The table as CSV, with the provenance as `# ` comment lines on top."""
    header = [f"# {name}"] if name else []
    header += [f"# {line}" for line in prov.lines()]
    body = table.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return ("\n".join(header) + "\n" + body).encode("utf-8")


def export_spec(spec: dict) -> dict:
    """A copy of a Vega-Lite spec that renders outside the page: 'container' sizes become fixed."""
    spec = dict(spec)
    single_view = "mark" in spec or "layer" in spec
    if spec.get("width") == "container" or (single_view and "width" not in spec):
        spec["width"] = EXPORT_WIDTH
    if spec.get("height") == "container":
        spec["height"] = 300
    spec.setdefault("background", "white")
    return spec


def altair_dict(chart) -> dict:
    """chart.to_dict() without Altair's 5,000-row limit: the page draws these charts already
    (Streamlit sends their data its own way), so a weight corner of 100 × 100 cells must export too."""
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict()


# Characters XML 1.0 forbids. vl-convert writes text marks into an SVG and parses it back; one such
# character in a label (a byte token such as \x11 in a random or byte-level vocabulary) makes its Rust
# code panic and ABORT the whole process, i.e. the server of every session. Every exported string is
# scrubbed: a C0 control becomes its Unicode control picture (\x11 -> ␑), anything else U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_char(match: re.Match) -> str:
    code = ord(match.group(0))
    return chr(0x2400 + code) if code < 0x20 else "\ufffd"


def xml_safe(value):
    """`value` (a spec: dicts, lists, strings, numbers) with every string fit for XML."""
    if isinstance(value, str):
        return _NOT_XML.sub(_xml_char, value)
    if isinstance(value, dict):
        return {xml_safe(k): xml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(xml_safe(v) for v in value)
    return value


def chart_spec(chart) -> dict:
    """Vega-Lite dict of an Altair chart or of a spec dict, ready for vl-convert (strings XML-safe)."""
    return xml_safe(export_spec(chart if isinstance(chart, dict) else altair_dict(chart)))


def _svg_size(svg: str) -> tuple[float, float]:
    root = re.search(r"<svg\b[^>]*>", svg).group(0)
    width = float(re.search(r'\bwidth="([\d.]+)', root).group(1))
    height = float(re.search(r'\bheight="([\d.]+)', root).group(1))
    return width, height


def with_footer(svg: str, prov: Provenance) -> str:
    """The chart's SVG with the provenance drawn under it (wrapped to the chart's width)."""
    svg = re.sub(r"^<\?xml[^>]*>\s*", "", svg.strip())
    width, height = _svg_size(svg)
    width = max(width, 360.0)  # a tiny chart still gets a readable footer
    per_line = max(40, int(width / (FOOTER_FONT * 0.55)))
    lines = [piece for line in prov.lines(max_value=300) for piece in textwrap.wrap(xml_safe(line), per_line)]
    line_height = FOOTER_FONT * 1.35
    footer = 8 + line_height * len(lines)
    total = height + footer
    texts = "".join(f'<text x="6" y="{height + 6 + line_height * (i + 1) - 3:.1f}">{escape(line)}</text>'
                    for i, line in enumerate(lines))
    metadata = escape(json.dumps(xml_safe(prov.as_dict()), ensure_ascii=False))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{width:g}" height="{total:.0f}" viewBox="0 0 {width:g} {total:.0f}">'
            f"<metadata>{metadata}</metadata>"
            f'<rect width="{width:g}" height="{total:.0f}" fill="white"/>{svg}'
            f'<g font-family="sans-serif" font-size="{FOOTER_FONT}" fill="#333">{texts}</g></svg>')


def chart_svg(chart, prov: Provenance) -> str:
    """SVG of a chart (Altair chart or Vega-Lite dict), rendered by vl-convert, with the footer."""
    import vl_convert

    return with_footer(vl_convert.vegalite_to_svg(chart_spec(chart)), prov)


def svg_to_png(svg: str, prov: Provenance, scale: float = 2.0) -> bytes:
    """PNG of an SVG at `scale` (2 = twice the size on the page, for slides), provenance in text chunks."""
    import vl_convert
    from PIL import Image, PngImagePlugin

    image = Image.open(io.BytesIO(vl_convert.svg_to_png(svg, scale=scale)))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Description", "\n".join(prov.lines()))
    info.add_itxt("Source", prov.url)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def chart_png(chart, prov: Provenance, scale: float = 2.0) -> bytes:
    return svg_to_png(chart_svg(chart, prov), prov, scale)


def image_svg(png: bytes, prov: Provenance) -> str:
    """A raster image (the attention grids) as SVG: the PNG embedded unchanged, the footer as text.

    The grids are drawn as pixels on purpose (thousands of heads × T² cells would be an SVG of
    millions of elements), so the SVG wraps the same pixels rather than redrawing them as vectors.
    """
    import base64

    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    data = base64.b64encode(png).decode("ascii")
    inner = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
             f'width="{width}" height="{height}"><image width="{width}" height="{height}" '
             f'style="image-rendering:pixelated" image-rendering="optimizeSpeed" '
             f'href="data:image/png;base64,{data}" xlink:href="data:image/png;base64,{data}"/></svg>')
    return with_footer(inner, prov)


# ---------------------------------------------------------------- the page API


@dataclass
class Item:
    """One thing a page drew, kept for the report: a chart (Altair or spec), an image, or a table."""

    kind: str  # "chart" | "image" | "table"
    name: str
    prov: Provenance
    chart: object = None  # alt.Chart or Vega-Lite dict
    png: bytes | None = None
    table: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)


def _record(item: Item) -> None:
    items = st.session_state.setdefault(ITEMS_KEY, [])
    if not any(old.kind == item.kind and old.name == item.name for old in items):
        items.append(item)


def begin_page(title: str, url_path: str) -> None:
    """Called by the entry script before a page runs: forget the last page's figures."""
    st.session_state[PAGE_KEY] = (title, url_path)
    st.session_state[ITEMS_KEY] = []


def page_items() -> list[Item]:
    """The figures and tables the current page run drew so far."""
    return list(st.session_state.get(ITEMS_KEY, []))


def _buttons(name: str, key: str, svg_of, prov: Provenance, table: pd.DataFrame | None) -> None:
    with st.container(horizontal=True, gap="small"):
        st.download_button("PNG (2×)", lambda: svg_to_png(svg_of(), prov), file_name=f"{name}.png",
                           mime="image/png", key=f"png-{key}", icon=":material/image:", on_click="ignore",
                           help="For slides: twice the size shown, with the provenance footer")
        st.download_button("SVG", lambda: svg_of().encode("utf-8"), file_name=f"{name}.svg",
                           mime="image/svg+xml", key=f"svg-{key}", icon=":material/draw:", on_click="ignore")
        if table is not None:
            st.download_button("CSV", lambda: csv_bytes(table, prov, name), file_name=f"{name}.csv",
                               mime="text/csv", key=f"csv-{key}", icon=":material/download:", on_click="ignore")


def _themed(spec: dict) -> dict:
    import theme

    return theme.themed_spec(spec)


def _st_theme():
    import theme

    return None if theme.presentation_on() else "streamlit"


def show_chart(chart: alt.Chart | alt.TopLevelMixin, name: str, *, table: pd.DataFrame | None = None,
               settings: dict | None = None, key: str | None = None, **altair_chart_kwargs):
    """Draw an Altair chart (st.altair_chart) with PNG / SVG (/ CSV of `table`) downloads under it.

    `name` is the file name without extension and must be unique on the page (add the model's
    label for side-by-side charts). `settings` holds what the page shows it with (layer, k, scale…);
    the page's URL inputs are added to it. Extra keyword arguments go to st.altair_chart
    (width, on_select, key is also passed on). Returns what st.altair_chart returns.
    """
    import theme

    if theme.presentation_on():  # the theme is merged per chart (see theme.py), so the spec is drawn
        return show_vega_lite(altair_dict(chart), name, table=table, settings=settings, key=key,
                              **altair_chart_kwargs)
    prov = provenance(settings)
    _record(Item("chart", name, prov, chart=chart, table=table))
    altair_chart_kwargs.setdefault("theme", _st_theme())
    shown = st.altair_chart(chart, key=key, **altair_chart_kwargs)
    _buttons(name, key or name, lambda: chart_svg(chart, prov), prov, table)
    return shown


def show_vega_lite(spec: dict, name: str, *, table: pd.DataFrame | None = None, settings: dict | None = None,
                   key: str | None = None, **vega_lite_chart_kwargs):
    """Like show_chart for a chart given as a Vega-Lite spec dict (drawn with st.vega_lite_chart)."""
    prov = provenance(settings)
    spec = _themed(spec)
    _record(Item("chart", name, prov, chart=spec, table=table))
    vega_lite_chart_kwargs.setdefault("theme", _st_theme())
    shown = st.vega_lite_chart(spec, key=key, **vega_lite_chart_kwargs)
    _buttons(name, key or name, lambda: chart_svg(spec, prov), prov, table)
    return shown


def show_image(png: bytes, name: str, *, table: pd.DataFrame | None = None, settings: dict | None = None,
               key: str | None = None, **image_kwargs) -> None:
    """A raster figure (st.image of PNG bytes) with PNG and SVG downloads, both with the footer.

    The SVG embeds the same pixels (see image_svg); the PNG is that SVG drawn at 2x with nearest-
    neighbour scaling, so every cell stays a sharp block.
    """
    prov = provenance(settings)
    _record(Item("image", name, prov, png=png, table=table))
    st.image(png, **image_kwargs)
    _buttons(name, key or name, lambda: image_svg(png, prov), prov, table)


def download_csv(table: pd.DataFrame, filename: str, label: str = "Download CSV", key: str | None = None,
                 settings: dict | None = None) -> None:
    """A CSV download of `table` with the provenance as `# ` lines on top.

    Written only when clicked, and the click does not rerun the page. The table is also recorded
    for the page's report.
    """
    prov = provenance(settings)
    name = filename.removesuffix(".csv")
    _record(Item("table", name, prov, table=table))
    st.download_button(label, lambda: csv_bytes(table, prov, name), file_name=filename, mime="text/csv",
                       key=key or f"csv-{filename}", icon=":material/download:", on_click="ignore")
