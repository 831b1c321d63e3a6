"""The three context pages under AppTest with the embedded pair: the numbers they show are core's values
(computed here on the same models), and the page survives bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from streamlit import dataframe_util

from core import run_trace
from core.running.context import similarity_curves, word_pieces
from core.running.lens import first_top1_layer, last_position_table, logit_lens, token_trajectory
from tests.apptest import assert_clean, run_page

pytestmark = [pytest.mark.app, pytest.mark.embedded]


def test_hidden_states_page_shows_entries_and_the_how_you_demo():
    app = run_page("views/running/hidden_states.py", query={"hs_prompt": "大家好"})
    assert_clean(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Hidden-state entries"] in ("31", "19")  # SmolLM2 30 layers + 1, Gemma 3 270M 18 + 1
    values = [m.value for m in app.metric if m.label == "Hidden-state entries"]
    assert sorted(values) == ["19", "31"]
    # demo tables at layer 1: "how" identical in both sentences, "you" not
    demos = [frame.value for frame in app.dataframe if "identical" in frame.value.columns]
    assert len(demos) == 2  # one per model
    for data in demos:
        how, you = data[data["word"] == "how"], data[data["word"] == "you"]
        assert how["identical"].all() and len(how) == 2  # "nice to meet you" has no "how"
        assert you["identical"].tolist() == [True, False, False]


def chart_data(element) -> pd.DataFrame:
    """The rows a chart on the page draws (st.altair_chart sends them as an Arrow dataset)."""
    datasets = element.proto.datasets
    if datasets:
        return dataframe_util.convert_arrow_bytes_to_pandas_df(datasets[0].data.data)
    spec = json.loads(element.proto.spec)  # a spec dict drawn with st.vega_lite_chart: inline values
    if spec.get("datasets"):
        return pd.DataFrame(next(iter(spec["datasets"].values())))
    return pd.DataFrame(spec.get("data", {}).get("values", []))


def test_similarity_page_draws_core_values():
    app = run_page("views/running/similarity.py")
    assert_clean(app)
    assert not app.error and len(app.get("vega_lite_chart")) == 1
    assert [d for d in app.get("download_button")]
    sentences = [s.strip() for s in app.session_state["sim_sentences"].splitlines()]
    assert len(sentences) == 2
    slots = app.session_state["_slots"]
    drawn = chart_data(app.get("vega_lite_chart")[0])
    assert json.loads(app.get("vega_lite_chart")[0].proto.spec)["encoding"]["y"]["field"] == "normalized"  # default
    columns = ["cosine", "normalized", "pair_normalized"]
    for slot in slots:
        expected = similarity_curves(slot.lm, sentences, "apple")
        expected = expected[expected["layer"] > 0]  # "Leave out layer 0" is on by default
        got = drawn[drawn["model"] == slot.title].sort_values("layer")
        assert got["layer"].tolist() == expected["layer"].tolist()
        np.testing.assert_allclose(got[columns].to_numpy(float), expected[columns].to_numpy(float), rtol=1e-5)
    pieces = [d.value for d in app.dataframe if "positions" in d.value.columns]
    for slot, shown in zip(slots, pieces):
        assert shown["positions"].tolist() == word_pieces(slot.lm, sentences, "apple")["positions"].tolist()

    # four sentences, divided by each pair's own two sentences
    app.button(key="sim_sentences-preset-1").click().run()
    app.radio(key="sim_value").set_value("pair_normalized").run()
    assert_clean(app)
    chart = app.get("vega_lite_chart")[0]
    assert json.loads(chart.proto.spec)["encoding"]["y"]["field"] == "pair_normalized"
    sentences = [s.strip() for s in app.session_state["sim_sentences"].splitlines()]
    drawn = chart_data(chart)
    for slot in slots:
        expected = similarity_curves(slot.lm, sentences, "apple").query("layer > 0")
        got = drawn[drawn["model"] == slot.title].sort_values(["i", "j", "layer"])
        assert len(got) == len(expected) == 6 * slot.lm.num_layers  # 6 pairs of 4 sentences
        expected = expected.sort_values(["i", "j", "layer"])
        np.testing.assert_allclose(got[columns].to_numpy(float), expected[columns].to_numpy(float), rtol=1e-5)
        assert not np.allclose(got["pair_normalized"], got["normalized"])  # 4 sentences: the two recipes differ


def test_similarity_page_missing_word_is_a_message():
    app = run_page("views/running/similarity.py", query={"sim_word": "banana"})
    assert_clean(app)
    assert len(app.error) == 2 and 'sentence 1 "I ate an apple for breakfast"' in app.error[0].value


def test_logit_lens_page_shows_core_values():
    prompt = "The capital of France is"
    app = run_page("views/running/logit_lens.py", query={"lens_prompt": prompt})
    assert_clean(app)
    assert not app.error
    slots = app.session_state["_slots"]
    metrics = {m.label: m.value for m in app.metric}
    last_tables = [d.value for d in app.dataframe if "top 1" in d.value.columns]
    drawn_data = [chart_data(chart) for chart in app.get("vega_lite_chart")]
    grids = [d for d in drawn_data if {"cell", "token_id", "prob"} <= set(d.columns)]  # top-1 cells
    curves = [d for d in drawn_data if {"looked_up", "rank", "prob", "model"} <= set(d.columns)]
    assert len(grids) == 2 and len(curves) == 1  # 1 grid per model + 1 trajectory chart
    trajectories = curves[0]
    for slot, shown_last, grid in zip(slots, last_tables, grids):
        trace = run_trace(slot.lm, prompt)
        last = len(trace.tokens) - 1
        lens = logit_lens(slot.lm, trace, k=5)
        # the grid: every cell's top-1 token and probability
        grid = grid.sort_values(["layer", "position"])
        top = lens[lens["rank"] == 1].sort_values(["layer", "position"])
        assert grid["token_id"].tolist() == top["token_id"].tolist()
        np.testing.assert_allclose(grid["prob"].to_numpy(float), top["prob"].to_numpy(float), rtol=1e-5)
        # the table of the last position
        expected_last = last_position_table(lens[lens["position"] == last])
        assert shown_last.astype(str).values.tolist() == expected_last.astype(str).values.tolist()
        # the trajectory of the model's own prediction, and the first layer where it is on top
        trajectory = token_trajectory(slot.lm, trace, None, last, True)
        drawn = trajectories[trajectories["model"] == slot.title].sort_values("layer")
        np.testing.assert_allclose(drawn["prob"].to_numpy(float), trajectory["prob"].to_numpy(float), rtol=1e-5)
        assert drawn["rank"].tolist() == trajectory["rank"].tolist()
        first = first_top1_layer(trajectory)
        label = f"{slot.title}: first layer where {trajectory['token'].iloc[0]!r} is the top prediction"
        assert metrics[label] == ("never" if first is None else f"layer {first} of {slot.lm.num_layers}")
