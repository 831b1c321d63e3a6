"""The Attention page of a remote model: core's own numbers, one job per render, only what is drawn comes back.

Through nnsight's local simulation of NDIF (`remote="local"`: the request serialized as for NDIF, our
modules hidden while it is deserialized), attention_page's summaries, pooled grid and picked head, and
attention_weights, must equal what the local page computes from its Trace (the weights stored in
float16: within 1e-4; the summaries and grid tiles are computed from those same float16 values) on
the tiny model of a few families and the embedded SmolLM2; each call ONE job, the model left as it
was (no hooks, a plain local run bit for bit the same). Llama-3.1-405B's bytes are sized on the meta
device. The page with model A simulated and model B local: one job per render, A's numbers = local.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from core import load_model, run_trace
from core.loading.load import build_on_meta
from core.model.loaded import LoadedModel
from core.remote.attention import check_full, full_bytes
from core.remote.budget import PAGE_BUDGET
from core.remote.errors import RemoteResultTooLarge
from core.remote.model import RemoteModel, remote_model
from core.running.attention import attention_weights, head_summaries, hide_first_token, summary_table, summaries_table
from core.running.attention_page import attention_page, page_bytes
from tests.test_remote import folders, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import counted_jobs, hook_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
from charts.attention import _resample, grid_image, tile_size  # noqa: E402

pytestmark = pytest.mark.embedded  # SmolLM2 and the page's model B are embedded
SHORT = "the apple is green. what color is the apple?"
LONG = " ".join(["The apple tree grows fruit that people eat in the autumn, and the fruit is green or red."] * 4)


def drawn_tiles(attentions: np.ndarray, hide: bool, cell: int) -> np.ndarray:
    """The tiles the local page's grid_image draws from a Trace's weights (its own loop, NaN = future)."""
    n = attentions.shape[-1] - int(hide)
    future = np.triu(np.ones((n, n), dtype=bool), k=1)
    tiles = []
    for layer in attentions:
        m = hide_first_token(layer) if hide else layer.astype(np.float32)
        m[:, future] = np.nan
        tiles.append(_resample(m, cell))
    return np.stack(tiles)  # (L, heads, cell, cell)


def same_page(lm, local, trace, *, hide: bool, size: int, head: tuple[int, int], jobs: list) -> dict:
    """attention_page of the simulated model against the local page's own computations; the differences."""
    before = len(jobs)
    page = attention_page(lm, trace.prompt, summaries=True, grid={"hide": hide, "size": size}, head=head)
    assert len(jobs) == before + 1 and jobs[-1].stats.outcome == "completed"
    assert page.tokens.tokens == trace.tokens and np.array_equal(page.tokens.token_ids, trace.token_ids)
    expected = head_summaries(trace.attentions)
    summary = max(float(np.abs(page.summaries[k] - expected[k]).max()) for k in expected)
    assert summary <= 1e-5
    table, local_table = summaries_table(local, page.summaries), summary_table(local, trace)
    assert list(table.columns) == list(local_table.columns)
    assert np.abs(table.iloc[:, 4:].to_numpy(float) - local_table.iloc[:, 4:].to_numpy(float)).max() <= 1e-4 + 1e-9
    got, want = _resample(page.grid, size), drawn_tiles(trace.attentions, hide, size)  # as the chart draws `size` px
    assert np.array_equal(np.isnan(got), np.isnan(want))
    grid = float(np.nanmax(np.abs(got - want)))
    assert grid <= 1e-5
    assert page.grid.shape[-1] == min(size, trace.attentions.shape[-1] - int(hide))
    weights = float(np.abs(page.head.astype(np.float32) - trace.attentions[head].astype(np.float32)).max())
    assert page.head.shape == trace.attentions.shape[-2:] and weights <= 1e-4
    assert lm.remote.last.bytes_received <= PAGE_BUDGET
    return {"summaries": summary, "grid": grid, "head": weights, "bytes": lm.remote.last.bytes_received, "page": page}


@pytest.mark.parametrize("kind", ["llama", "gemma3", "gpt2"])
def test_simulated_attention_is_the_local_attention(folders, monkeypatch, kind, tmp_path):
    """Summaries, grid (the page's tile size, and pooled unevenly to 7 cells), one head, every weight: = local."""
    if kind not in folders:
        from tests.tiny import save_tiny

        folders[kind] = save_tiny(kind, tmp_path / kind)
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, SHORT)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    last = (local.num_layers - 1, local.num_heads - 1)
    for prompt, size in ((SHORT, None), (LONG, 7)):
        trace = run_trace(local, prompt)
        for hide in (False, True):
            cells = size or tile_size(len(trace.tokens) - int(hide), local.num_heads)
            found = same_page(lm, local, trace, hide=hide, size=cells, head=last, jobs=jobs)
            print(f"{kind} {len(trace.tokens)} tokens, hide={hide}, size={cells}: max differences summaries "
                  f"{found['summaries']:.1e}, grid {found['grid']:.1e}, head {found['head']:.1e}; "
                  f"{found['bytes']:,} bytes")
    tokens, weights = attention_weights(lm, SHORT)
    local_tokens, local_weights = attention_weights(local, SHORT)
    assert tokens == local_tokens and len(jobs) == 5 and np.abs(weights - local_weights).max() <= 1e-4
    assert hook_state(local.model) == hooks
    after = run_trace(local, SHORT)
    assert np.array_equal(after.attentions, before.attentions)
    assert np.array_equal(after.hidden_states, before.hidden_states)
    assert np.array_equal(after.last_logits, before.last_logits)


def test_smollm_attention(smollm, monkeypatch):
    """The embedded SmolLM2 (30 layers x 9 heads) on the page's short prompt: the page's parts = local, one job."""
    lm = remote_model(smollm, "local")
    jobs = counted_jobs(monkeypatch, lm)
    trace = run_trace(smollm, SHORT)
    for hide in (False, True):
        found = same_page(lm, smollm, trace, hide=hide, size=tile_size(len(trace.tokens) - int(hide), 9),
                          head=(6, 7), jobs=jobs)
        print(f"SmolLM2 hide={hide}: summaries {found['summaries']:.1e}, grid {found['grid']:.1e}, "
              f"head {found['head']:.1e}; {found['bytes']:,} bytes")
    image = np.asarray(grid_image(found["page"].grid))
    assert np.array_equal(image, np.asarray(grid_image(trace.attentions, hide_first=True)))  # the same picture
    assert len(jobs) == 2


def test_attention_bytes_405b():
    """Llama-3.1-405B from its config on the meta device at 64 tokens: one render (summaries, grid at the
    page's 16-pixel tiles, one head) is under 64 MB; every head's weights (132 MB) is refused before sending."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                         num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                         tie_word_embeddings=False)
    model = build_on_meta(config)
    lm = LoadedModel("llama-405b", None, model, None, False, "meta", model.dtype, 0.0)
    assert (lm.num_layers, lm.num_heads, lm.num_kv_heads) == (126, 128, 8)
    cells = tile_size(64, 128)
    page = page_bytes(lm, 64, cells)
    grid = 126 * 128 * cells * cells * 4
    assert cells == 16 and grid < page < grid + 126 * 4 * 128 * 4 + 64 * 64 * 2 + 8192 and page <= PAGE_BUDGET
    full = full_bytes(126, 128, 64)
    assert full > 126 * 128 * 64 * 64 * 2 > PAGE_BUDGET
    with pytest.raises(RemoteResultTooLarge, match="attention_page"):
        check_full(lm, 64)
    print(f"Llama-3.1-405B at 64 tokens: one attention render {page:,} bytes; every head {full:,} bytes (refused)")


@pytest.fixture
def page_folder(tmp_path, tiny_folders):
    """A copy of the tiny Llama for the page: a model new to the server's model store."""
    return str(shutil.copytree(tiny_folders["llama"], tmp_path / "tiny-llama"))


@pytest.mark.app
def test_attention_page_runs_a_remote_model(page_folder, monkeypatch):
    """Model A simulated, model B (embedded) local: one job per render, A's summaries are core's local numbers;
    another head is a job for that head alone, hiding the first token one for the grid."""
    import ui
    from tests.apptest import assert_clean, run_page
    from tests.test_pages_context import chart_data

    page_slots = ui.page_slots
    monkeypatch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, True))  # RUNS_REMOTE
    started, new_job = [], RemoteModel.new_job
    monkeypatch.setattr(RemoteModel, "new_job", lambda self, *a, **k: started.append(new_job(self, *a, **k))
                        or started[-1])
    app = run_page(query={"a": page_folder, "place_a": "remote", "ndif_a": "local"})
    app.switch_page("views/running/attention.py").run()
    assert_clean(app)
    assert not app.error and len(app.get("image")) == 2 and len(started) == 1
    slots = app.session_state["_slots"]
    assert ui.remote_of(slots[0].lm) is not None and ui.remote_of(slots[1].lm) is None
    local = load_model(page_folder, device="cpu")
    prompt = app.session_state["attn_prompt"]
    expected = summary_table(local, run_trace(local, prompt))
    charts = [c for c in app.get("vega_lite_chart") if "layer" in chart_data(c).columns and "head" in chart_data(c)]
    drawn = chart_data(charts[0])
    metric = app.session_state["attn_metric"]
    got = drawn.sort_values(["layer", "head"])[metric].to_numpy(float)
    assert np.abs(got - expected.sort_values(["layer", "head"])[metric].to_numpy(float)).max() <= 1e-4 + 1e-9
    app.number_input(key="attn_head_A").set_value(0).run()
    assert not app.error and len(started) == 2 and "head (" in started[-1].label and "grid" not in started[-1].label
    app.toggle(key="attn_hide_first").set_value(True).run()
    assert not app.error and len(started) == 3 and "grid" in started[-1].label and "head" not in started[-1].label
    assert_clean(app)
