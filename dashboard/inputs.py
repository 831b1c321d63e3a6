"""Widgets bound to the URL query string, so that a copied link reproduces the view.

Each widget takes its first value from the URL, else from the session, else the default, and writes
what the user picks back into the URL. The page scripts call them through `ui` (ui.text_input, …).
"""

from __future__ import annotations

import streamlit as st


def bound_value(key: str, default):
    """Initial value of a widget: the URL's, else what the session has, else the default."""
    if key not in st.session_state:
        st.session_state[key] = st.query_params.get(key, default)
    return st.session_state[key]


def remember_in_url(key: str, value) -> None:
    if value is None or value == "":
        st.query_params.pop(key, None)
    else:
        st.query_params[key] = str(value)


def text_input(label: str, key: str, default: str = "", area: bool = False, **kwargs) -> str:
    bound_value(key, default)
    widget = st.text_area if area else st.text_input
    value = widget(label, key=key, **kwargs)
    remember_in_url(key, value)
    return value


def number_input(label: str, key: str, default: int, min_value: int, max_value: int, **kwargs) -> int:
    if key not in st.session_state:
        try:
            st.session_state[key] = min(max(int(st.query_params.get(key, default)), min_value), max_value)
        except ValueError:
            st.session_state[key] = default
    value = st.number_input(label, key=key, min_value=min_value, max_value=max_value, step=1, **kwargs)
    remember_in_url(key, value)
    return int(value)


def slider(label: str, key: str, default: float, min_value: float, max_value: float, step: float,
           **kwargs) -> float:
    """A float slider bound to the URL (a value out of range or not a number falls back to the default)."""
    if key not in st.session_state:
        try:
            st.session_state[key] = min(max(float(st.query_params.get(key, default)), min_value), max_value)
        except ValueError:
            st.session_state[key] = default
    value = st.slider(label, key=key, min_value=min_value, max_value=max_value, step=step, **kwargs)
    remember_in_url(key, value)
    return float(value)


def selectbox(label: str, options: list, key: str, default=None, **kwargs):
    options = list(options)
    wanted = st.query_params.get(key, default if default is not None else options[0])
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = wanted if wanted in options else options[0]
    value = st.selectbox(label, options, key=key, **kwargs)
    remember_in_url(key, value)
    return value


def preset_row(presets: dict[str, dict[str, str]], prefix: str, label: str = "Presets") -> None:
    """A row of buttons; clicking one sets several inputs at once ({session key: value})."""

    def use(values: dict[str, str]) -> None:
        st.session_state.update(values)

    st.caption(label)
    columns = st.columns(min(len(presets), 6))
    for i, (name, values) in enumerate(presets.items()):
        text = " / ".join(v for v in values.values() if v.strip())
        columns[i % len(columns)].button(name, key=f"{prefix}-preset-{i}", on_click=use, args=(values,),
                                         help=text if len(text) <= 160 else text[:160] + "…", width="stretch")


def preset_buttons(presets: dict[str, str], target_key: str, label: str = "Presets from the lecture",
                   also: dict[str, dict[str, str]] | None = None) -> None:
    """A row of buttons; clicking one puts its text into the input `target_key`.

    `also` (optional): {preset name: {other input key: value}}, set by that preset as well."""
    preset_row({name: {target_key: text, **(also or {}).get(name, {})} for name, text in presets.items()},
               target_key, label)


# ---------------------------------------------------------------- the model pickers
