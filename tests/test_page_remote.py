"""App tier: a model on NDIF (issue 18, loading) in the sidebar, on Home, on the weight pages and elsewhere.

Model A is the tiny random Llama (tests/tiny.py) on nnsight's local simulation of NDIF, or on an
NDIF that cannot be reached (a closed port on 127.0.0.1: no NDIF is reachable from these
machines); model B is the default embedded Gemma 3 270M, run here. The logit lens page runs A
remotely: one job per page, the local numbers, and a failed job as a message in A's column. What is real: the sidebar,
the cached model store, core's remote loading (meta device for a URL, weights for the
simulation), nnsight's simulation and nnsight's own client failing to connect.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest

import numpy as np

from core import load_model, logit_lens, run_trace, token_trajectory
from core.remote.budget import lens_page_bytes
from tests.apptest import assert_clean, run_page
from tests.test_pages_context import chart_data
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
import export  # noqa: E402
import report  # noqa: E402

pytestmark = [pytest.mark.app, pytest.mark.embedded]  # model B: the embedded Gemma 3 270M

KEY = "ndif-FAKE-k3y-Qz7Wv19Xr"  # distinctive: wherever it shows up, it leaked
REPO = "org/tiny-llama"
NOTE = "Model A runs on NDIF; this page does not run remote models yet"
GEMMA_PARAMS = "268,098,176"
TINY_PARAMS = "38,112"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_folders):
    """A copy of the tiny Llama of this module only: its models are new to the server's model store."""
    return str(shutil.copytree(tiny_folders["llama"], tmp_path_factory.mktemp("remote-app") / "tiny-llama"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def tables_text(app) -> str:
    return " ".join(t.value.to_csv() for t in [*app.table, *app.dataframe])


def remote_facts(app) -> dict[str, str]:
    """Home's table of the remote model (the one whose index holds "Runs on")."""
    for table in app.table:
        if "Runs on" in table.value.index:
            return table.value.iloc[:, 0].to_dict()
    raise AssertionError("Home shows no remote model")


def link_query(app) -> dict[str, str]:
    """The page's query string as a copied link holds it."""
    return {key: (value[0] if isinstance(value, list) else value) for key, value in app.query_params.items()}


def messages(app, kind: str) -> list[str]:
    return [m.value for m in getattr(app, kind)]


def everything_shown(app) -> list[str]:
    """Every element of the page and the sidebar as its protobuf text: values, labels, placeholders, help."""
    out = []

    def walk(node):
        for child in getattr(node, "children", {}).values():
            proto = getattr(child, "proto", None)
            if proto is not None:
                out.append(str(proto))
            walk(child)

    walk(app._tree)
    return out


def exported(app) -> list[str]:
    """The page's export items as their files would hold them: provenance, CSVs, and its report section."""
    items = app.session_state[export.ITEMS_KEY]
    out = []
    for item in items:
        out += [*item.prov.lines(), str(item.prov.as_dict())]
        if item.table is not None:
            out.append(export.csv_bytes(item.table, item.prov, item.name).decode())
    tables = [item for item in items if item.kind == "table"]  # the report's section (figures: SVG of the same prov)
    out.append(report.page_section("page", tables + [item for item in items if item.kind != "table"][:1], 1))
    return out


def assert_no_key(app, where: str) -> None:
    shown = everything_shown(app)
    assert shown and not [text for text in shown if KEY in text], where
    assert KEY not in str(dict(app.query_params)), where
    assert not [text for text in exported(app) if KEY in text], where
    assert KEY not in repr(app.session_state["_slots"]), where  # model keys hold a salted hash, not the key


def test_simulated_model_on_home_weight_pages_and_a_page_that_cannot_run_it(folder, monkeypatch):
    """remote="local": Home's card before and after a request; Architecture and Vocabulary show both
    models; a page that does not run remote models shows the plain note in A's column while B's figures
    draw (every page runs them now, so Block writes is made one, as a page off RUNS_REMOTE is)."""
    app = run_page(query={"a": folder, "place_a": "remote", "ndif_a": "local"})
    assert_clean(app)
    assert GEMMA_PARAMS in tables_text(app) and TINY_PARAMS in tables_text(app)  # both cards
    facts = remote_facts(app)
    assert facts["Runs on"] == "nnsight's local simulation of NDIF (on this machine)"
    assert facts["Running on NDIF now"].startswith("not asked")
    assert facts["Last request"] == "no request yet"

    app.button(key="ndif_test_A").click().run()  # one request through nnsight's simulation of NDIF
    assert_clean(app)
    assert not messages(app, "error")
    assert any(s.startswith("It answered: the next token after") for s in messages(app, "success"))
    facts = remote_facts(app)
    lm = app.session_state["_slots"][0].lm
    assert facts["Last request"] == "completed"
    assert facts["Bytes received"] == f"{lens_page_bytes(lm.config, k=5, last_only=True):,}"  # what NDIF would send
    assert facts["Run time"].endswith(" s") and facts["Queue time"].startswith("none")
    assert app.query_params["place_a"] in ("remote", ["remote"]) and app.query_params["ndif_a"] in ("local", ["local"])

    for page in ("views/weights/architecture.py", "views/weights/vocabulary.py"):
        app.switch_page(page).run()
        assert_clean(app)
        assert not messages(app, "error") and not [m for m in messages(app, "info") if NOTE in m], page
        assert "Model A: tiny-llama" in tables_text(app) or "Model A: tiny-llama" in str(
            [t.value.columns.tolist() for t in [*app.table, *app.dataframe]]), page
    app.switch_page("views/weights/architecture.py").run()
    assert TINY_PARAMS in tables_text(app) and GEMMA_PARAMS in tables_text(app)

    import ui

    page_slots = ui.page_slots
    with monkeypatch.context() as patch:  # Block writes as if its line in RUNS_REMOTE were commented out
        patch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, False))
        app.switch_page("views/cause/block_writes.py").run()
    assert_clean(app)
    notes = [m for m in messages(app, "info") if m.startswith(NOTE)]
    assert notes and "nnsight's local simulation of NDIF" in notes[0]
    assert not messages(app, "error")
    assert app.get("vega_lite_chart")  # model B's figures
    items = app.session_state[export.ITEMS_KEY]
    assert items and all("Model B: gemma-3-270m" in item.prov.models[1] for item in items)
    assert all(f"(not shown: {NOTE}" in item.prov.models[0] for item in items)


def test_key_never_shown_and_an_unreachable_self_hosted_ndif(folder):
    """A key typed in the password field is used but shown nowhere; an NDIF that cannot be reached is
    one plain message in A's column, and B keeps working."""
    url = f"http://127.0.0.1:{closed_port()}"
    query = {"a": folder, "place_a": "remote", "ndif_a": "url", "ndif_url_a": url, "ndif_repo_a": REPO}
    app = run_page(query=query)
    assert_clean(app)
    assert any("no key is sent" in c.value for c in app.caption)  # the server's own key never goes to a typed URL
    app.text_input(key="ndif_key_a").input(KEY).run()
    assert_clean(app)
    assert app.text_input(key="ndif_key_a").value == ""  # kept in the session, not sent back to the browser
    assert any("using the key typed in this session" in c.value for c in app.caption)
    lm = app.session_state["_slots"][0].lm
    assert lm.remote.target.key == KEY and not lm.has_weights and lm.device == "meta"  # used, on the meta device
    facts = remote_facts(app)
    assert facts["Runs on"] == f"self-hosted NDIF at {url}" and facts["Hugging Face id on NDIF"] == REPO
    assert facts["Running on NDIF now"] == f"unknown: {url}/status could not be reached from here (ConnectError)"
    assert facts["Last request"] == "no request yet"
    assert_no_key(app, "Home")

    app.button(key="ndif_test_A").click().run()
    assert_clean(app)
    column_a = app.columns[0]  # the first columns on Home: the remote models, A left
    assert any(m.value.startswith(f"Offline: could not reach NDIF at {url}") for m in column_a.error)
    assert GEMMA_PARAMS in tables_text(app)  # B's card still there
    assert remote_facts(app)["Last request"] == "failed"
    assert_no_key(app, "Home after the failed request")

    for page in ("views/weights/architecture.py", "views/weights/vocabulary.py", "views/running/hidden_states.py",
                 "views/cause/block_writes.py"):  # the last one sends its jobs to the unreachable host
        app.switch_page(page).run()
        assert_clean(app)
        assert app.session_state[export.ITEMS_KEY], page  # figures and tables whose files are checked
        assert_no_key(app, page)
    assert any("could not reach NDIF" in m for m in messages(app, "error")) and app.get("vega_lite_chart")

    again = run_page(query=link_query(app))  # the copied link
    assert_clean(again)
    assert remote_facts(again)["Runs on"] == f"self-hosted NDIF at {url}"  # the pick is in the URL, the key is not
    assert again.session_state["_slots"][0].lm.remote.target.key is None


def test_ndif_service_takes_the_typed_key(folder, monkeypatch):
    """NDIF's own service (NDIF_HOST, here a closed port): no key is a message in A's column; a typed
    key loads the model and goes with its requests."""
    host = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("NDIF_HOST", host)
    app = run_page(query={"a": folder, "place_a": "remote", "ndif_a": "ndif", "ndif_repo_a": REPO})
    assert_clean(app)
    assert any(m.startswith("Model A") and "No NDIF API key" in m for m in messages(app, "error"))
    assert GEMMA_PARAMS in tables_text(app)
    app.text_input(key="ndif_key_a").input(KEY).run()
    assert_clean(app)
    assert remote_facts(app)["Runs on"] == f"NDIF at {host}"
    app.button(key="ndif_test_A").click().run()
    assert any(m.value.startswith(f"Offline: could not reach NDIF at {host}") for m in app.columns[0].error)
    assert_no_key(app, "Home, NDIF's own service")


LENS = "views/running/logit_lens.py"


def lens_charts(app):
    """(grids, trajectories) the lens page draws: each model's top-1 cells, and the trajectory chart's rows."""
    drawn = [chart_data(chart) for chart in app.get("vega_lite_chart")]
    return ([d for d in drawn if {"cell", "token_id", "prob"} <= set(d.columns)],
            [d for d in drawn if {"looked_up", "rank", "prob", "model"} <= set(d.columns)])


def test_logit_lens_page_runs_a_simulated_model_in_one_job(folder, jobs):
    """A on remote="local", B here: A's grid and trajectory are core's local numbers on the same weights
    (loaded again here, apart from the page), from ONE job; B draws; Home then shows the bytes received."""
    prompt = "The capital of France is"
    app = run_page(LENS, query={"a": folder, "place_a": "remote", "ndif_a": "local", "lens_prompt": prompt})
    assert_clean(app)
    assert not messages(app, "error") and not [m for m in messages(app, "info") if NOTE in m]
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"  # grid and trajectory together
    grids, curves = lens_charts(app)
    assert len(grids) == 2 and len(curves) == 1
    slots = app.session_state["_slots"]
    local = load_model(folder, device="cpu")  # the same weights, run here
    for lm, grid, title in ((local, grids[0], slots[0].title), (slots[1].lm, grids[1], slots[1].title)):
        trace = run_trace(lm, prompt)
        top = logit_lens(lm, trace, k=5).query("rank == 1").sort_values(["layer", "position"])
        grid = grid.sort_values(["layer", "position"])
        assert grid["token_id"].tolist() == top["token_id"].tolist()
        np.testing.assert_allclose(grid["prob"].to_numpy(float), top["prob"].to_numpy(float), atol=1e-5)
        path = token_trajectory(lm, trace, None, len(trace.tokens) - 1, True)
        drawn = curves[0][curves[0]["model"] == title].sort_values("layer")
        assert drawn["rank"].tolist() == path["rank"].tolist()
        np.testing.assert_allclose(drawn["prob"].to_numpy(float), path["prob"].to_numpy(float), atol=1e-5)
    items = app.session_state[export.ITEMS_KEY]
    assert items and all("runs on nnsight's local simulation of NDIF" in item.prov.models[0] for item in items)

    app.text_input(key="lens_target").input("Paris").run()  # a new word: one more job, grid and all
    assert_clean(app)
    assert len(jobs) == 2 and not messages(app, "error")
    tokens = len(run_trace(local, prompt).tokens)
    app.switch_page("views/home.py").run()
    facts = remote_facts(app)
    assert facts["Last request"] == "completed"
    assert facts["Bytes received"] == f"{lens_page_bytes(local.config, tokens, k=5):,}"  # grid and trajectory


def test_logit_lens_page_with_an_unreachable_ndif(folder, jobs):
    """A failed job is a message in A's column, B's lens draws; nothing is cached: the next run asks again,
    once per run."""
    url = f"http://127.0.0.1:{closed_port()}"
    app = run_page(LENS, query={"a": folder, "place_a": "remote", "ndif_a": "url", "ndif_url_a": url,
                                "ndif_repo_a": REPO, "lens_prompt": "The capital of France is"})
    assert_clean(app)
    offline = f"Offline: could not reach NDIF at {url}"
    errors = messages(app, "error")  # A's grid column, A's last-position table, A's trajectory column
    assert len(errors) == 3 and errors[0].startswith(offline) and errors[2].startswith(f"Model A ({folder}): {offline}")
    assert [c.error[0].value for c in app.columns if c.error] == [errors[0], errors[2]]  # in columns: A's
    assert len(jobs) == 1 and jobs[0].stats.outcome == "failed"
    grids, curves = lens_charts(app)
    assert len(grids) == 1 and len(curves) == 1 and set(curves[0]["model"]) == {app.session_state["_slots"][1].title}
    app.run()
    assert len(jobs) == 2 and len(messages(app, "error")) == 3  # not cached: asked again, once
