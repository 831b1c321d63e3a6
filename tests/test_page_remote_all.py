"""App tier: every page with model A on nnsight's local simulation of NDIF (issue 18, "AppTest of every page").

Model A is the tiny random Llama run through `remote="local"` (the request serialized as for NDIF,
our modules hidden while it is deserialized), model B the tiny random Gemma 3 run here (both tiny, so
all fifteen pages fit in the app tier's time). Each page must draw without an exception, with no
"does not run remote models" note and no error in A's column, and every job it sends must complete;
a page that runs text must send at least one. The numbers themselves are checked page by page
against core's local path in tests/test_remote_*.py and tests/test_page_remote*.py.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests.apptest import assert_clean, run_page
from tests.test_page_remote import NOTE
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)

pytestmark = pytest.mark.app


def entry_literal(name: str):
    """A literal assigned in the entry script (read, not run: running it draws a page)."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / "dashboard" / "Home.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name)


PAGES = [file for pages in entry_literal("PAGES").values() for file, _, _ in pages]
RUNS_REMOTE = entry_literal("RUNS_REMOTE")
PAGE_QUERY = {  # the default pair differs in length under the tiny tokenizer, and its random weights answer both alike
    "views/cause/activation_patching.py": {"ap_clean": "the apple is green. what color is the",
                                           "ap_corrupted": "the apple is red. what color is the",
                                           "ap_answer": "green", "ap_foil": "red"},
}
NEEDS_NO_RUN = {"views/home.py", "views/weights/architecture.py", "views/weights/vocabulary.py"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_folders):
    root = tmp_path_factory.mktemp("remote-every-page")
    return (str(shutil.copytree(tiny_folders["llama"], root / "tiny-llama")),
            str(shutil.copytree(tiny_folders["gemma3"], root / "tiny-gemma3")))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_a_simulated_model(page, pair, jobs):
    app = run_page(None if page == "views/home.py" else page,
                   query={"a": pair[0], "b": pair[1], "place_a": "remote", "ndif_a": "local", **PAGE_QUERY.get(page, {})})
    assert_clean(app)
    assert page in RUNS_REMOTE, f"{page} does not run remote models"
    assert not [m.value for m in app.info if NOTE in m.value]
    column_a = app.columns[0] if app.columns else None
    assert column_a is None or not [e.value for e in column_a.error], [e.value for e in column_a.error]
    assert all(job.stats.outcome == "completed" for job in jobs), jobs
    if page not in NEEDS_NO_RUN:
        assert jobs, f"{page} sent no job for model A"
