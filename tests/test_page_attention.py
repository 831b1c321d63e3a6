"""The Attention page (AppTest through the entry script) and the grid image builder."""

import io

import numpy as np
import pytest
from PIL import Image

from charts.attention import FUTURE, GAP, LUT, SELECTED, grid_image, png_bytes, tile_size
from tests.apptest import assert_clean, run_page

PAGE = "views/running/attention.py"


def test_grid_image_tiles_colours_and_layout():
    maps = np.zeros((2, 3, 2, 2), dtype=np.float16)
    maps[..., 0, 0] = 1  # token 0 looks at itself
    maps[..., 1, 0] = 0.5
    maps[..., 1, 1] = 0.5
    maps[1, 2, 1] = (1, 0)  # layer 1, head 2: token 1 only looks at token 0
    image = grid_image(maps, selected=(0, 1))
    cell = tile_size(2, 3)
    half = cell // 2
    pixels = np.asarray(image)
    # find the first tile: its top-left pixel is the brightest colour (weight 1 of a shared max 1)
    ys, xs = np.nonzero((pixels == LUT[255]).all(-1))
    top, left = ys.min(), xs.min()

    def tile(layer, head, i, j):
        return tuple(pixels[top + layer * (cell + GAP) + i * half + 1, left + head * (cell + GAP) + j * half + 1])

    assert tile(0, 0, 0, 1) == FUTURE  # upper triangle
    assert tile(0, 0, 1, 0) == tuple(LUT[127])  # 0.5 of the max
    assert tile(1, 2, 1, 1) == tuple(LUT[0])  # weight 0
    assert tile(1, 2, 1, 0) == tuple(LUT[255])
    assert tuple(pixels[top + cell + 1, left + (cell + GAP) + 3]) == SELECTED  # red box around layer 0 head 1
    per_head = np.asarray(grid_image(np.stack([maps[:, :1], maps[:, :1] * 0.1], axis=1)[:, :, 0], shared_scale=False))
    assert (per_head == LUT[255]).all(-1).sum() > 0
    decoded = Image.open(io.BytesIO(png_bytes(image)))
    assert decoded.size == image.size


def test_grid_image_long_prompt_is_bounded():
    maps = np.tril(np.ones((2, 24, 512, 512), dtype=np.float16)) / np.arange(1, 513, dtype=np.float16)[:, None]
    image = grid_image(maps, log_scale=True)
    assert image.size[0] < 1300 and image.size[1] < 200  # max-pooled tiles, not 512 px each
    assert len(png_bytes(image)) < 2_000_000


@pytest.mark.app
@pytest.mark.embedded
def test_page_default_prompt():
    app = run_page(PAGE)
    assert_clean(app)
    assert [h.value for h in app.main.header][-3:] == ["One head up close", "Every head of every layer", "Head summaries"]
    assert app.session_state["attn_layer_A"] == 6 and app.session_state["attn_head_A"] == 7
    assert app.session_state["attn_head_B"] == 3  # Gemma 3 270M has 4 heads: the lecture's head 7 is clamped
    assert len(app.get("image")) == 2
    assert len(app.get("vega_lite_chart")) == 5  # the token-alignment strip, 2 heads up close, 2 summaries
    assert app.get("vega_lite_chart")[0].key == "attn_strip"
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels.count("PNG of the grid") == 2 and labels.count("CSV of this head") == 2
    assert labels.count("CSV of the summaries") == 2

    app.toggle(key="attn_hide_first").set_value(True).run()
    app.toggle(key="attn_log").set_value(True).run()
    app.number_input(key="attn_layer_B").set_value(5).run()
    assert_clean(app)
    assert "global" in " ".join(c.value for c in app.caption)  # layer 5 of Gemma 3 270M is a global layer


@pytest.mark.app
@pytest.mark.embedded
def test_page_long_preset_and_empty_prompt():
    app = run_page(PAGE)
    app.button(key="attn_prompt-preset-1").click().run()  # the ~500-token preset
    assert_clean(app)
    assert len(app.session_state["attn_prompt"]) > 2000
    assert len(app.slider) == 2  # up close shows a window of the long prompt, one per model
    assert len(app.get("image")) == 2
    captions = " ".join(c.value for c in app.caption)
    assert "495 tokens" in captions and "494 tokens" in captions

    app.text_area(key="attn_prompt").set_value("   ").run()
    assert_clean(app)
    assert any("Type a prompt" in w.value for w in app.warning)


def test_grid_image_hide_first_matches_renormalised_maps():
    """hide_first drops token 0 and renormalises each row: compared with that renormalisation written here."""
    rng = np.random.default_rng(1)
    maps = np.tril(rng.random((2, 2, 5, 5))).astype(np.float16)
    maps /= maps.sum(-1, keepdims=True)
    maps[1, 0, 2] = (1, 0, 0, 0, 0)  # a row that looks only at token 0: nothing left, drawn as weight 0
    rest = maps[..., 1:, 1:].astype(np.float64)  # (2, 2, 4, 4): token 0 gone, as query and as key
    total = rest.sum(-1, keepdims=True)
    direct = np.where(total > 0, rest / np.where(total > 0, total, 1), 0).astype(np.float32)
    assert np.allclose(direct[1, 0, 1], 0) and np.allclose(direct[0, 0, 3].sum(), 1)
    hidden = np.asarray(grid_image(maps, hide_first=True, log_scale=True))
    expected = np.asarray(grid_image(direct, log_scale=True))
    assert hidden.shape == expected.shape and (hidden == expected).all()
    plain = np.asarray(grid_image(maps, log_scale=True))
    assert plain.shape != hidden.shape  # 4 tokens per tile instead of 5: the picture really changed
