"""Presentation mode: charts and tables readable on a projector, and by colour-blind viewers.

The sidebar switch ("Presentation", kept in the URL as `?present=1`) turns on:
- an Altair theme, `lmsbs_presentation`: larger fonts on axes, legends, titles and facet headers,
  thicker lines and rules, bigger points, and colour-blind-safe colours: the Okabe–Ito
  categorical palette (Okabe & Ito 2008, "Color Universal Design"), "cividis" for sequential
  scales (Nuñez, Anderton & Renslow 2018: designed to look the same to viewers with
  red–green colour blindness) and "blueorange" for diverging ones;
- CSS that enlarges the page's text and its tables (Streamlit sizes both in rem, so one root font
  size scales them; CSS zoom on a table would desynchronise its canvas from its layout).

The theme is registered with `alt.theme.register` so a notebook can `alt.theme.enable` it, but
the pages do not enable it: `alt.theme.enable` is process-wide, and one server is shared by every
visitor, so one person's switch would restyle everyone's charts. Instead each chart's spec gets the
theme's config merged into it (`themed_spec`), which is what `alt.theme.enable` does at `to_dict()`.
"""

from __future__ import annotations

import altair as alt
import streamlit as st

URL_KEY = "present"
STATE_KEY = "presentation"
THEME_NAME = "lmsbs_presentation"

# Okabe & Ito (2008): eight colours distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
SEQUENTIAL = "cividis"
DIVERGING = "blueorange"

LABEL, TITLE, HEADING = 16, 18, 22  # px


def presentation_config() -> dict:
    """The Vega-Lite `config` of presentation mode."""
    axis = {"labelFontSize": LABEL, "titleFontSize": TITLE, "labelColor": "#000", "titleColor": "#000",
            "domainColor": "#000", "tickColor": "#000", "domainWidth": 1.5, "gridColor": "#bbb"}
    return {
        "font": "sans-serif",
        "axis": axis,
        "legend": {"labelFontSize": LABEL, "titleFontSize": TITLE, "symbolSize": 200, "symbolStrokeWidth": 3,
                   "labelColor": "#000", "titleColor": "#000", "labelLimit": 400},
        "header": {"labelFontSize": TITLE, "titleFontSize": TITLE, "labelColor": "#000"},
        "title": {"fontSize": HEADING, "subtitleFontSize": LABEL, "color": "#000"},
        "text": {"fontSize": LABEL},
        "line": {"strokeWidth": 4},
        "rule": {"strokeWidth": 3},
        "trail": {"size": 4},
        "point": {"size": 140, "filled": True},
        "circle": {"size": 140},
        "square": {"size": 140},
        "tick": {"thickness": 3},
        "bar": {"stroke": "#000", "strokeWidth": 0.5},
        "range": {"category": OKABE_ITO, "ordinal": {"scheme": SEQUENTIAL}, "ramp": {"scheme": SEQUENTIAL},
                  "heatmap": {"scheme": SEQUENTIAL}, "diverging": {"scheme": DIVERGING}},
    }


@alt.theme.register(THEME_NAME, enable=False)
def presentation_theme() -> alt.theme.ThemeConfig:
    return {"config": presentation_config()}


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def presentation_on() -> bool:
    """Whether this session shows the presentation style (the switch, else the URL)."""
    if STATE_KEY in st.session_state:
        return bool(st.session_state[STATE_KEY])
    return st.query_params.get(URL_KEY) == "1"


CATEGORICAL_SCHEMES = {"tableau10", "tableau20", "category10", "category20", "set1", "set2", "set3", "paired",
                       "accent", "dark2", "pastel1", "pastel2"}
LOW_CONTRAST_SEQUENTIAL = {"blues", "greens", "greys", "oranges", "purples", "reds", "bluegreen", "bluepurple"}


def _recolour(node):
    """Colour scales a chart names explicitly (a config range does not reach them), made safe:
    hex ranges and categorical schemes -> Okabe–Ito; pale one-hue ramps -> cividis. Diverging
    schemes (red–blue) and viridis are already colour-blind safe and stay."""
    if isinstance(node, list):
        return [_recolour(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {key: _recolour(value) for key, value in node.items()}
    scale = node.get("scale")
    if isinstance(scale, dict):
        scale = dict(scale)
        colours = scale.get("range")
        if isinstance(colours, list) and colours and all(isinstance(c, str) and c.startswith("#") for c in colours):
            scale["range"] = [OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(colours))]
        scheme = scale.get("scheme")
        scheme = scheme.get("name") if isinstance(scheme, dict) else scheme
        if scheme in CATEGORICAL_SCHEMES:
            scale.pop("scheme")
            scale["range"] = OKABE_ITO
        elif scheme in LOW_CONTRAST_SEQUENTIAL:
            # One-hue ramps run light -> dark and cividis dark -> light: reversed, high values stay dark,
            # so a chart's own text colours (white on dark cells) stay readable.
            scale["scheme"] = SEQUENTIAL
            scale["reverse"] = not scale.get("reverse", False)
        node["scale"] = scale
    return node


def presentation_spec(spec: dict) -> dict:
    """`spec` in presentation style: the theme's config merged over its own, explicit colours made safe."""
    spec = _recolour(spec)
    return {**spec, "config": _merge(spec.get("config", {}), presentation_config())}


def themed_spec(spec: dict) -> dict:
    """`spec` as this session shows it: presentation style when the switch is on, else unchanged."""
    return presentation_spec(spec) if presentation_on() else spec


def sequential_scheme(default: str) -> str:
    """Colour scheme for a sequential scale: the chart's own, or cividis in presentation mode.

    For charts that name a scheme explicitly (a config range does not override an explicit one).
    """
    return SEQUENTIAL if presentation_on() else default


def categorical_range(default: list[str] | None = None) -> list[str] | None:
    """Colours for a categorical scale: the chart's own (None = Vega's), or Okabe–Ito when presenting."""
    return OKABE_ITO if presentation_on() else default


CSS = """
<style>
html { font-size: 20px; }
[data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] { color: #000; }
</style>
"""


def presentation_switch() -> bool:
    """The sidebar switch, bound to `?present=1`. Returns whether presentation mode is on."""
    if STATE_KEY not in st.session_state:
        st.session_state[STATE_KEY] = st.query_params.get(URL_KEY) == "1"
    on = st.sidebar.toggle("Presentation", key=STATE_KEY,
                           help="For a projector: larger fonts, thicker lines, colour-blind-safe colours "
                                "(Okabe–Ito, cividis). Kept in the URL.")
    if on:
        st.query_params[URL_KEY] = "1"
        st.sidebar.markdown(CSS, unsafe_allow_html=True)
    else:
        st.query_params.pop(URL_KEY, None)
    return on
