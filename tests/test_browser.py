"""Real-browser tier: the running app in headless Chromium (Debian's chromium-headless-shell + Playwright).

Screenshots are kept in artifacts/ for a person to look at.
"""

import io
import time
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


PAGES = ["architecture", "vocabulary", "embeddings", "hidden_states", "similarity", "logit_lens", "attention",
         "activation_patching", "input_tokens", "block_writes"]
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
    if not list((ROOT / "dashboard" / "views").rglob(f"{name}.py")):
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
        text = Path(summaries.value.path()).read_text()  # provenance first, as "# " lines
        rows = list(csv.DictReader(io.StringIO("".join(x for x in text.splitlines(True) if not x.startswith("#")))))
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


# ---------------------------------------------------------------- exports (dashboard/export.py, report.py)


def metric_values(page) -> dict[str, str]:
    """{label: value} of every st.metric, read per metric so that a half-drawn one cannot shift the pairs."""
    return dict(page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMetric"]')].map(m => [
        m.querySelector('[data-testid="stMetricLabel"]')?.innerText ?? '',
        m.querySelector('[data-testid="stMetricValue"]')?.innerText ?? ''])"""))


def download(page, key: str) -> Path:
    """Click the download button whose Streamlit key starts with `key`; the saved file's path."""
    with page.expect_download() as event:
        page.locator(f'[class*="st-key-{key}"] button').first.click()
    return Path(event.value.path())


def test_exports_hold_the_numbers_the_page_shows(app_url):
    """Vocabulary overlap: the three numbers shown as metrics = the CSV = the bars of the SVG figure;
    the PNG is the SVG at twice the size; every file names the page, the models and the view's URL."""
    import re
    import xml.etree.ElementTree as ET

    import numpy as np
    import pandas as pd
    from PIL import Image

    with browser_page() as page:
        page.goto(f"{app_url}/vocabulary")
        wait_until_idle(page, timeout=300)
        # CI once read the metrics while Streamlit was still swapping the overlap row in ("Only in A"
        # missing, the others there): wait for all three before reading them
        wanted = ("Only in A", "Shared", "Only in B")
        deadline = time.time() + 60
        while not set(wanted) <= {k.strip() for k in metric_values(page)} and time.time() < deadline:
            page.wait_for_timeout(250)
        shown = {k.strip(): int(v.replace(",", "")) for k, v in metric_values(page).items() if k.strip() in wanted}
        assert len(shown) == 3, metric_values(page)

        text = download(page, "csv-vocabulary_overlap_counts").read_text()
        table = pd.read_csv(io.StringIO(text), comment="#")
        assert dict(zip(table["where"], table["tokens"])) == {
            "only in A": shown["Only in A"], "shared": shown["Shared"], "only in B": shown["Only in B"]}
        comments = [line for line in text.splitlines() if line.startswith("# ")]
        assert "# Page: Vocabulary" in comments and any(c.startswith("# Model A: smollm2-135m") for c in comments)
        assert any(c.startswith(f"# URL: {app_url}/vocabulary?") and "a=smollm2-135m" in c for c in comments)

        svg = download(page, "svg-vocabulary_overlap_chart").read_text()
        root = ET.fromstring(svg)
        bars = {}  # Vega labels each mark with its data: "...; Where: shared; Entries: 12,345"
        for label in re.findall(r'aria-label="([^"]*Entries: [^"]*)"', svg):
            bars[re.search(r"Where: ([^;]+)", label).group(1)] = int(re.search(r"Entries: ([\d,]+)", label).group(1)
                                                                     .replace(",", ""))
        assert bars == dict(zip(table["where"], table["tokens"]))
        # the chart on the page is drawn by the same Vega as SVG: its marks carry the same labels
        on_page = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg [aria-label]')]
            .map(e => e.getAttribute('aria-label')).filter(l => l.includes('Entries: '))""")
        exported = [x.replace("&amp;", "&") for x in re.findall(r'aria-label="([^"]*Entries: [^"]*)"', svg)]
        assert sorted(on_page) == sorted(exported) and len(on_page) == 3

        # a table: the cells of model A's embedding row on the page (Streamlit's grid mirrors the
        # visible cells in an accessible <table>) = the same rows of its CSV export
        cells = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] table')]
            .map(t => [...t.querySelectorAll('tr')].map(r => [...r.querySelectorAll('th, td')].map(c => c.innerText)))
            .filter(rows => rows.length > 1 && rows[0].join('|') === 'dimension|value')""")[0]
        row_csv = pd.read_csv(download(page, "csv-embedding_row_A"), comment="#")
        # the weights are float32: the grid prints the value widened to float64 (-0.007167816162109375),
        # the CSV the shortest text that reads back as the same float32 (-0.007167816)
        shown_rows = [(int(d), np.float32(v)) for d, v in cells[1:]]
        assert len(shown_rows) >= 5
        exported = [(int(d), np.float32(v)) for d, v in zip(row_csv["dimension"], row_csv["value"])]
        assert shown_rows == exported[:len(shown_rows)]
        drawn = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        assert "Page: Vocabulary" in drawn and "Model B: gemma-3-270m" in drawn

        png = Image.open(download(page, "png-vocabulary_overlap_chart"))
        assert png.size == (round(2 * float(root.get("width"))), round(2 * float(root.get("height"))))
        assert "Page: Vocabulary" in png.text["Description"]
        (ARTIFACTS / "export-vocabulary-overlap.svg").write_text(svg)
        png.save(ARTIFACTS / "export-vocabulary-overlap.png")
        assert not page_problems(page), page_problems(page)

    with browser_page() as viewer:  # the SVG opens on its own in a browser, and draws its bars
        viewer.goto((ARTIFACTS / "export-vocabulary-overlap.svg").as_uri())
        assert viewer.locator("svg path, svg rect").count() > 3
        viewer.screenshot(path=str(ARTIFACTS / "export-vocabulary-overlap-svg-in-chromium.png"))


def test_report_opens_offline_with_every_figure(app_url):
    """Export report from the similarity page with a page never opened (Vocabulary) ticked too; the
    file, opened with every network request blocked, draws every figure."""
    with browser_page() as page:
        page.goto(f"{app_url}/similarity")
        wait_until_idle(page, timeout=300)
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Export report").click()
        page.wait_for_timeout(500)  # the expander opens
        box = sidebar.locator('[class*="st-key-report_pages"]').get_by_role("combobox").first
        box.click()
        page.wait_for_timeout(500)
        box.press_sequentially("Vocab", delay=50)  # typing filters the options (and opens the list)
        option = page.locator('[role="option"]', has_text="Vocabulary").first
        option.wait_for()
        option.click()
        page.keyboard.press("Escape")
        wait_until_idle(page)  # the page titles in the file, checked below, show what was ticked
        sidebar.get_by_role("button", name="Build report").click()
        page.wait_for_timeout(1000)
        wait_until_idle(page, timeout=600)
        screenshot(page, ARTIFACTS / "report-built.png")
        report_bytes = download(page, "report_download").read_bytes()  # read before the browser closes
        assert not page_problems(page), page_problems(page)

    with browser_page() as viewer:
        requested = []

        def block(route):
            if not route.request.url.startswith("file:"):
                requested.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        viewer.route("**/*", block)
        target = ARTIFACTS / "report.html"
        target.write_bytes(report_bytes)
        viewer.goto(target.as_uri())
        titles = viewer.locator("section > h2").all_inner_texts()
        assert titles == ["Vocabulary", "Contextual similarity"]
        links = [a.get_attribute("href") for a in viewer.get_by_role("link", name="Reopen this view").all()]
        assert [link.split("?")[0] for link in links] == [f"{app_url}/vocabulary", f"{app_url}/similarity"]
        assert all("a=smollm2-135m" in link and "sim_word=apple" in link for link in links)
        figures = viewer.evaluate("""() => [...document.querySelectorAll('figure.figure')].map(f => {
            const svg = f.querySelector(':scope > svg');
            if (!svg) return null;
            const box = svg.getBoundingClientRect();
            const marks = [...svg.querySelectorAll('path, rect, line')].filter(m => {
                const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; }).length;
            return [box.width, box.height, marks];
        })""")
        assert len(figures) >= 3  # vocabulary: 2 charts, similarity: 1
        assert all(f and f[0] > 50 and f[1] > 50 and f[2] > 5 for f in figures), figures
        assert requested == [], requested  # nothing in the file even tries the network
        assert not viewer.console_errors, viewer.console_errors
        screenshot_path = ARTIFACTS / "report-offline.png"
        viewer.screenshot(path=str(screenshot_path), full_page=True)
