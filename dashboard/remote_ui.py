"""Home's facts about a model on NDIF: where it runs, whether NDIF runs it now, its last request.

The facts come from core.remote (Target.describe, ndif_status, RemoteModel.last); none of them
holds the NDIF key. A test request (core.remote.lens.remote_lens_last on a short prompt) lets a
user check the connection before any page sends one.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from core import ModelLoadError
from core.remote.connection import Target, ndif_status
from core.remote.errors import redact
from core.remote.jobs import JobStats
from core.remote.model import RemoteModel

TEST_PROMPT = "The capital of France is"
STATUS_SECONDS = 60  # how long NDIF's answer about what it runs is reused


@st.cache_data(ttl=STATUS_SECONDS, show_spinner="Asking NDIF which models it runs…")
def _deployments(mode: str, host: str) -> tuple[dict[str, str] | None, str | None]:
    return ndif_status(Target(mode, host))  # the status page needs no key: none is passed; failures kept too


def running_now(rm: RemoteModel) -> str:
    """Whether NDIF says it runs this model now, in words ("unknown" with the reason when it cannot say)."""
    target = rm.target
    if target.is_simulation:
        return "not asked: nnsight's local simulation runs on this machine, not on an NDIF server"
    states, why = _deployments(target.mode, target.host)
    if states is None:
        return f"unknown: {redact(why, *rm.secrets())}"
    if not rm.repo_id:
        return "unknown: this model has no Hugging Face id to look up"
    state = states.get(rm.repo_id)
    if state is None:
        return f"no: {rm.repo_id} is not among the {len(states)} models it lists now"
    return f"yes ({state})" if state == "RUNNING" else f"not now: {state}"


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.2f} s"


def request_facts(rm: RemoteModel) -> dict[str, str]:
    """Fact -> value for Home: where, running now, and the last request's timeline and bytes."""
    facts = {"Runs on": rm.target.describe(),
             "Hugging Face id on NDIF": rm.repo_id or "none (the simulation needs none)",
             "Running on NDIF now": running_now(rm)}
    stats: JobStats | None = rm.last
    if stats is None:
        return {**facts, "Last request": "no request yet"}
    queue = "none (the simulation has no queue)" if rm.target.is_simulation else "not reported"
    return {**facts, "Last request": stats.outcome,
            "Queue time": _seconds(stats.queue_seconds, queue),
            "Run time": _seconds(stats.run_seconds, "not reported"),
            "Total time": _seconds(stats.total_seconds, "not reported"),
            "Bytes received": f"{stats.bytes_received:,}"}


def test_request(slot: ui.Slot) -> None:
    """A button that sends one small request (the logit lens's top tokens at the last position)."""
    if not st.button(f"Send a test request for model {slot.label}", key=f"ndif_test_{slot.label}",
                     help=f"Runs the logit lens at the last token of '{TEST_PROMPT}' where the model runs: "
                          "one job, a few hundred bytes back."):
        return
    from core.remote.lens import remote_lens_last  # imports nnsight: only when a request is sent

    try:
        with st.spinner(f"Waiting for {ui.remote_of(slot.lm).target.describe()}…"):
            table = remote_lens_last(slot.lm, TEST_PROMPT, k=5)
    except (ModelLoadError, ValueError) as error:  # RemoteError is a ModelLoadError; its text is redacted
        st.error(str(error))
        return
    top = table[table["layer"] == table["layer"].max()].iloc[0]
    st.success(f"It answered: the next token after '{TEST_PROMPT}' is {top['token']!r} "
               f"(probability {top['prob']:.2f}).")


def remote_section(slots: list[ui.Slot]) -> None:
    """For each model on NDIF, in its own column: a test request, then where it runs and its last request."""
    remote = [slot for slot in slots if ui.remote_of(slot.lm) is not None]
    if not remote:
        return
    st.header("Models on NDIF")
    st.caption("NDIF runs the model on its GPUs through nnsight. Every page works with it: a page's work is one "
               "request (one wait in NDIF's queue), and only what the page shows comes back.")
    for column, slot in zip(st.columns(2, gap="large"), slots):
        with column:
            rm = ui.remote_of(slot.lm)
            if rm is None:
                continue
            st.subheader(slot.title)
            test_request(slot)
            facts = pd.DataFrame({slot.title: request_facts(rm)})
            facts.index.name = "Fact"
            st.table(facts)


def page_left() -> bool:
    """Whether Streamlit asked this run to stop or start over (the user left the page, changed an input, or
    pressed Stop): a job still waiting for NDIF is then dropped (core.remote.jobs.stop_when).

    Streamlit 1.67 keeps that request in the run's ScriptRequests; it raises it only at the next
    Streamlit call, which a page waiting in NDIF's queue does not make.
    """
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    requests = getattr(get_script_run_ctx(), "script_requests", None)
    state = getattr(requests, "_state", ScriptRequestType.CONTINUE)
    return state != ScriptRequestType.CONTINUE
