"""Real-browser tier: the running app in headless Chromium (Debian's chromium-headless-shell + Playwright).

Screenshots are kept in artifacts/ for a person to look at.
"""

from pathlib import Path

import pytest

from tests.browser import browser_page, chromium_path, serve_app, wait_until_idle

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def app_url():
    if chromium_path() is None:
        pytest.fail("chromium-headless-shell is not installed (apt-get install chromium-headless-shell)")
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app() as url:
        yield url


def test_home_shows_both_model_cards(app_url):
    with browser_page() as page:
        page.goto(app_url)
        wait_until_idle(page)
        page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
        body = page.inner_text("body")
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "Model A: smollm2-135m" in body and "Model B: gemma-3-270m" in body
        assert "134,515,008" in body and "268,098,176" in body
        assert not page.console_errors, page.console_errors
