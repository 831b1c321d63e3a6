"""Real-browser tier: the running app in headless Chromium (Debian's chromium-headless-shell + Playwright).

Screenshots are kept in artifacts/ for a person to look at.
"""

from pathlib import Path

import pytest

from tests.browser import browser_page, chromium_path, screenshot, serve_app, wait_until_idle

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
        screenshot(page, ARTIFACTS / "home.png")
        body = page.inner_text("body")
        assert page.locator('[data-testid="stException"]').count() == 0
        assert "Model A: smollm2-135m" in body and "Model B: gemma-3-270m" in body
        assert "134,515,008" in body and "268,098,176" in body
        assert not page.console_errors, page.console_errors


PAGES = ["architecture", "vocabulary", "embeddings", "hidden_states", "similarity", "logit_lens", "attention"]
ROOT = Path(__file__).resolve().parents[1]


def page_problems(page) -> list[str]:
    """Exception boxes, console errors, and charts or images that drew nothing."""
    problems = page.locator('[data-testid="stException"]').all_inner_texts()
    problems += [f"console: {e}" for e in page.console_errors]
    empty = page.evaluate("""() => {
        const bad = [];
        document.querySelectorAll('[data-testid="stVegaLiteChart"]').forEach((el, i) => {
            const mark = el.querySelector('canvas, svg');
            const box = el.getBoundingClientRect();
            if (!mark || box.width < 10 || box.height < 10) bad.push(`chart ${i} is empty`);
        });
        document.querySelectorAll('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img').forEach((img, i) => {
            if (!img.complete || img.naturalWidth === 0) bad.push(`image ${i} did not load`);
        });
        return bad;
    }""")
    return problems + empty


@pytest.mark.parametrize("name", PAGES)
def test_every_page_and_every_preset(app_url, name):
    if not (ROOT / "dashboard" / "views" / f"{name}.py").exists():
        pytest.skip(f"page {name} not built yet")
    with browser_page() as page:
        page.goto(f"{app_url}/{name}")
        wait_until_idle(page, timeout=300)
        screenshot(page, ARTIFACTS / f"{name}.png")
        assert not page_problems(page), page_problems(page)
        # ui.preset_buttons gives each button the key "<input>-preset-<i>"; Streamlit turns a key
        # into the class st-key-<key> on the button's container.
        # Buttons inside a closed expander or another tab are not clickable: only visible ones.
        presets = page.locator('.stElementContainer[class*="-preset-"] button:visible')
        for i in range(presets.count()):
            presets.nth(i).click()
            wait_until_idle(page, timeout=300)
            problems = page_problems(page)
            assert not problems, (i, problems)
        screenshot(page, ARTIFACTS / f"{name}-after-presets.png")


def test_switching_model_while_a_page_is_computing(app_url):
    """Pick another model B while the attention page is still running a long prompt."""
    with browser_page() as page:
        page.goto(f"{app_url}/attention")
        wait_until_idle(page, timeout=300)
        page.locator('.stElementContainer[class*="-preset-"] button:visible').nth(1).click()  # the ~500-token text
        page.wait_for_timeout(300)  # the run has started
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
        page.get_by_role("option", name="SmolLM2-135M-Instruct (embedded, Llama architecture)").click()
        wait_until_idle(page, timeout=300)
        screenshot(page, ARTIFACTS / "attention-after-switch.png")
        assert not page_problems(page), page_problems(page)
        body = page.inner_text('[data-testid="stMain"]')
        assert body.count("Model B: smollm2-135m") >= 1 and "Model A: smollm2-135m" in body


def test_downloads_hold_what_the_page_shows(app_url):
    """The CSV and PNG buttons of the attention page give real files, made on click, without a rerun."""
    import csv
    import io

    from PIL import Image

    with browser_page() as page:
        page.goto(f"{app_url}/attention")
        wait_until_idle(page, timeout=300)
        page.evaluate("""() => {  // record every change of Streamlit's script state from now on
            const app = document.querySelector('[data-testid="stApp"]');
            window.scriptStates = [];
            new MutationObserver(() => window.scriptStates.push(app.getAttribute('data-test-script-state')))
                .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
        }""")
        with page.expect_download() as summaries:
            page.get_by_role("button", name="CSV of the summaries").first.click()
        rows = list(csv.DictReader(io.StringIO(Path(summaries.value.path()).read_text())))
        assert len(rows) == 30 * 9  # SmolLM2: 30 layers × 9 heads
        assert {"layer", "head", "kv_head", "layer_kind"} <= set(rows[0])
        assert sorted({int(r["head"]) for r in rows}) == list(range(9))

        with page.expect_download() as grid:
            page.get_by_role("button", name="PNG of the grid").nth(1).click()
        picture = Image.open(grid.value.path())
        shown = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                              ".map(i => [i.naturalWidth, i.naturalHeight])")
        assert list(picture.size) == shown[1]  # model B's grid, exactly the picture on the page
        assert grid.value.suggested_filename == "attention_grid_B.png"
        # on_click="ignore": a download does not rerun the page
        page.wait_for_timeout(1000)
        assert "running" not in page.evaluate("window.scriptStates")
        assert not page_problems(page), page_problems(page)
