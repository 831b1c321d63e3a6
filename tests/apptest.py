"""Run a dashboard page under streamlit.testing.v1.AppTest, through the entry script."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ENTRY = str(Path(__file__).resolve().parents[1] / "dashboard" / "Home.py")
VIEWS = Path(ENTRY).parent / "views"


def page_file(name: str) -> str:
    """The page script called `name` ("attention") as the entry script names it: views/<section>/<name>.py."""
    found = sorted(VIEWS.rglob(f"{name}.py"))
    assert len(found) == 1, f"no single page script {name}.py under dashboard/views: {found}"
    return str(found[0].relative_to(VIEWS.parent))


def run_page(page: str | None = None, query: dict[str, str] | None = None, timeout: float = 300) -> AppTest:
    """Open `page` (e.g. "views/running/attention.py"; None = Home) with optional URL query params.

    Runs the entry script first so the models picked in the sidebar are loaded,
    exactly as a browser visit does.
    """
    app = AppTest.from_file(ENTRY, default_timeout=timeout)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.run()
    if page is not None:
        app.switch_page(page).run()
    return app


def assert_clean(app: AppTest) -> None:
    """No exception box on the page."""
    assert not app.exception, [e.value for e in app.exception]
