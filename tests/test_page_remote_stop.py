"""App tier: a page stopped while its NDIF job is queued (issue 18): the wait ends, nothing is kept, the next run works.

What is real: the dashboard, Streamlit's own stop (AppTest stops a run that passes its timeout, as
Streamlit stops a run whose user left the page or changed an input), nnsight 0.8.1's client, and
an NDIF server that queues the job and never runs it: tests/fake_ndif.py on 127.0.0.1 (the live
NDIF cannot be reached from here). Model A is the tiny Llama on the meta device, sent to the fake.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from tests.apptest import assert_clean, run_page
from tests.fake_ndif import FakeNDIF
from tests.test_page_remote import KEY, REPO, remote_facts
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)

pytestmark = [pytest.mark.app, pytest.mark.embedded]  # model B: the embedded Gemma 3 270M


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_folders):
    return str(shutil.copytree(tiny_folders["llama"], tmp_path_factory.mktemp("remote-stop") / "tiny-llama"))


def test_page_stopped_while_its_job_is_queued(folder, jobs):
    canned = {"lens": {"ids": torch.arange(20).reshape(4, 5), "probs": torch.linspace(0.9, 0.1, 20).reshape(4, 5)}}
    with FakeNDIF(["queued", "complete"], result=canned, hosted=(REPO,), keys=(KEY,), max_requests=30,
                  lifetime=120) as server:
        app = run_page(query={"a": folder, "place_a": "remote", "ndif_a": "url", "ndif_url_a": server.url,
                              "ndif_repo_a": REPO})
        app.text_input(key="ndif_key_a").input(KEY).run()
        assert_clean(app)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="timed out"):  # the run is stopped while the job waits in the queue
            app.button(key="ndif_test_A").click().run(timeout=4)
        assert time.monotonic() - started < 30  # the wait ended with the run, not at the job's 600 s limit
        assert server.queued.is_set() and server.closed_while_queued.wait(5)  # the client hung up on the queued job
        assert len(jobs) == 1 and jobs[0].stats.outcome == "cancelled"

        app.button(key="ndif_test_A").click().run()  # the next run is a new job, and it completes
        assert_clean(app)
        assert len(jobs) == 2 and jobs[1].stats.outcome == "completed"
        assert not [m for m in app.columns[0].error]
        assert remote_facts(app)["Last request"] == "completed"
        answer = [m.value for m in app.success if m.value.startswith("It answered")]
        assert len(answer) == 1 and "(probability 0.27)" in answer[0]  # the canned result's last layer, top token
