"""The Cause analyses of a remote model: core's own activation_patching and token_attribution, one job each.

Through nnsight's local simulation of NDIF (`remote="local"`: the request serialized as for NDIF, our
modules hidden while it is deserialized), exact activation patching of every site and occlusion must
give the local hooks' numbers (the same cells, edits and metric: core.cause.cause_reduce) on the tiny
Llama and Gemma 3 and the embedded SmolLM2; each call is ONE job whose bytes are the meta-device
computation's; the model is left as it was (no hooks, a plain local run bit for bit the same). The
gradient modes (attribution patching, gradient × input) run there too, backward pass included, one job
each, with the local path's numbers and no gradient left on any weight. For Llama-3.1-405B on the
lecture's 12-token prompt, what a page brings back is sized on the meta device.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import (activation_patching, block_contributions, block_token_effects, load_model, run_trace,
                  token_attribution, what_blocks_read)
from core.cause.blocks import block_page
from core.cause.patching import patching_sites
from core.cause.attribution import ROWS_PER_FORWARD
from core.cause.patching import MAX_ROWS_PER_FORWARD, SITES
from core.remote.budget import LECTURE_TOKENS, PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.cause_blocks import blocks_bytes, reads_bytes
from core.remote.cause import occlusion_bytes, patching_bytes
from core.remote.cause_grad import attribution_bytes, grad_x_input_bytes
from core.remote.model import remote_model
from tests.test_remote import folders, jobs, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import counted_jobs, hook_state

pytestmark = pytest.mark.embedded  # test_smollm_cause loads the embedded SmolLM2
CLEAN, CORRUPTED = "the apple is green. what color is the", "the apple is red. what color is the"
PROMPT = "the apple is green. what color is the apple?"
TOLERANCE = 1e-5  # fp32 models: the same computation, batched alike


def same_patching(got, expected) -> float:
    """The same cells, tokens, answer and foil, scores within TOLERANCE and the same strongest cell."""
    assert got.drop(columns="score").equals(expected.drop(columns="score"))
    for name in ("answer_id", "foil_id", "notes", "differing_positions", "site", "method"):
        assert got.attrs[name] == expected.attrs[name]
    for name in ("m_clean", "m_corrupted"):
        assert abs(got.attrs[name] - expected.attrs[name]) <= TOLERANCE
    difference = float(np.abs(got["score"].to_numpy() - expected["score"].to_numpy()).max())
    assert difference <= TOLERANCE
    assert got["score"].to_numpy().argmax() == expected["score"].to_numpy().argmax()
    return difference


def same_attribution(got, expected) -> float:
    assert got.drop(columns="score").equals(expected.drop(columns="score"))
    assert (got.attrs["target_id"], got.attrs["notes"]) == (expected.attrs["target_id"], expected.attrs["notes"])
    assert abs(got.attrs["logprob"] - expected.attrs["logprob"]) <= TOLERANCE
    difference = float(np.abs(got["score"].to_numpy() - expected["score"].to_numpy()).max())
    assert difference <= TOLERANCE
    return difference


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_simulated_cause_is_the_local_cause(folders, monkeypatch, kind):
    """Every site's exact grid (the foil given; and both defaults where the runs' top tokens differ) and
    occlusion (the model's own target, and a typed one) = the local path, ONE job per call."""
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, PROMPT)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    T = len(lm.tokenizer(CLEAN)["input_ids"])
    for site in SITES:
        for answer, foil in ((None, " red"), (" green", None)):
            expected = activation_patching(local, CLEAN, CORRUPTED, answer=answer, foil=foil, site=site)
            count = len(jobs)
            got = activation_patching(lm, CLEAN, CORRUPTED, answer=answer, foil=foil, site=site)
            assert len(jobs) == count + 1 and jobs[-1].stats.outcome == "completed"
            same_patching(got, expected)
            assert lm.remote.last.bytes_received == patching_bytes(local, T, MAX_ROWS_PER_FORWARD)
    count = len(jobs)
    every = patching_sites(lm, CLEAN, CORRUPTED, foil=" red")  # the page's "All three": one job
    assert len(jobs) == count + 1 and list(every) == list(SITES)
    for site, table in every.items():
        same_patching(table, activation_patching(local, CLEAN, CORRUPTED, foil=" red", site=site))
    assert lm.remote.last.bytes_received == patching_bytes(local, T, MAX_ROWS_PER_FORWARD, sites=3)
    for target in (None, " green"):
        count = len(jobs)
        same_attribution(token_attribution(lm, PROMPT, target=target), token_attribution(local, PROMPT, target=target))
        assert len(jobs) == count + 1
        assert lm.remote.last.bytes_received == occlusion_bytes(local, len(before.tokens), ROWS_PER_FORWARD,
                                                                target=target is None)
    assert hook_state(local.model) == hooks
    after = run_trace(local, PROMPT)
    assert np.array_equal(after.hidden_states, before.hidden_states)
    assert np.array_equal(after.last_logits, before.last_logits)


def same_blocks(got, expected) -> float:
    """The same parts, tokens, target and notes; sizes and effects within TOLERANCE; the same strongest part."""
    numbers = ["norm", "logit_effect"]
    assert got.drop(columns=numbers).equals(expected.drop(columns=numbers))
    for name in ("target_id", "notes"):
        assert got.attrs[name] == expected.attrs[name]
    assert abs(got.attrs["logit"] - expected.attrs["logit"]) <= TOLERANCE
    difference = float(np.nanmax(np.abs(got[numbers].to_numpy(float) - expected[numbers].to_numpy(float))))
    assert difference <= TOLERANCE
    assert got["logit_effect"].abs().idxmax() == expected["logit_effect"].abs().idxmax()
    return difference


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_simulated_blocks_are_the_local_blocks(folders, monkeypatch, kind):
    """block_contributions (own and typed target) and block_token_effects through the simulation = the local
    path, ONE job each, the bytes of the meta computation; the effects still add up to the model's logit."""
    local = load_model(str(folders[kind]), device="cpu")
    T = len(run_trace(local, PROMPT).tokens)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    for target in (None, " green"):
        got = block_contributions(lm, PROMPT, target=target)
        assert len(jobs) == 1 + (target is not None) and jobs[-1].stats.outcome == "completed"
        same_blocks(got, block_contributions(local, PROMPT, target=target))
        assert abs(got["logit_effect"].sum() - got.attrs["logit"]) <= 1e-4
        assert lm.remote.last.bytes_received == blocks_bytes(local, T)
    got, expected = block_token_effects(lm, PROMPT, k=5), block_token_effects(local, PROMPT, k=5)
    assert len(jobs) == 3 and got.drop(columns="logit_effect").equals(expected.drop(columns="logit_effect"))
    assert np.abs(got["logit_effect"] - expected["logit_effect"]).max() <= TOLERANCE
    assert lm.remote.last.bytes_received == blocks_bytes(local, T, k=5)
    contributions, effects = block_page(lm, PROMPT, target=" green", k=5)  # the page: both from one job
    assert len(jobs) == 4 and effects.equals(got)
    same_blocks(contributions, block_contributions(local, PROMPT, target=" green"))
    original, changed = "The apple is green. What color is the apple?", "The apple is red. What color is the apple?"
    got, expected = what_blocks_read(lm, original, changed), what_blocks_read(local, original, changed)
    numbers = ["input_change", "output_change", "held_output_change"]
    assert len(jobs) == 5 and got.drop(columns=numbers).equals(expected.drop(columns=numbers))
    assert np.abs(got[numbers].to_numpy() - expected[numbers].to_numpy()).max() <= TOLERANCE
    assert (got[got["block"] == "mlp"]["held_output_change"] == 0).all()  # the demonstration holds remotely too
    assert lm.remote.last.bytes_received == reads_bytes(local.num_layers)
    assert hook_state(local.model) == hooks


def test_refusals_are_the_local_ones(folders, monkeypatch):
    """An answer equal to the foil is refused as locally, in both methods, before any job where both are typed."""
    local = load_model(str(folders["llama"]), device="cpu")
    lm = remote_model(local, "local")
    jobs = counted_jobs(monkeypatch, lm)
    for model in (local, lm):
        for method in ("exact", "attribution"):
            with pytest.raises(ValueError, match="the same token"):
                activation_patching(model, CLEAN, CORRUPTED, answer=" red", foil=" red", method=method)
    assert jobs == []


def no_weight_grads(model) -> bool:
    return all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_simulated_gradient_modes_are_the_local_ones(folders, monkeypatch, kind):
    """Attribution patching of every site (the foil given; the answer given) and of all three in one job, and
    gradient × input (own and typed target) through the simulation, backward pass included = the local path,
    ONE job per call, the bytes of the meta computation; no weight gets a .grad, even weights that ask for
    one (as a deployment's may); no hook is left and a plain local run is bit for bit the same."""
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, PROMPT)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    T = len(lm.tokenizer(CLEAN)["input_ids"])
    differences = []
    for site in SITES:
        for answer, foil in ((None, " red"), (" green", None)):
            expected = activation_patching(local, CLEAN, CORRUPTED, answer=answer, foil=foil, site=site,
                                           method="attribution")
            count = len(jobs)
            got = activation_patching(lm, CLEAN, CORRUPTED, answer=answer, foil=foil, site=site, method="attribution")
            assert len(jobs) == count + 1 and jobs[-1].stats.outcome == "completed"
            differences.append(same_patching(got, expected))
            assert lm.remote.last.bytes_received == attribution_bytes(local, T)
    count = len(jobs)
    every = patching_sites(lm, CLEAN, CORRUPTED, foil=" red", sites=("mlp", "resid", "attn"), method="attribution")
    assert len(jobs) == count + 1 and list(every) == ["mlp", "resid", "attn"]  # the order asked, one job
    for site, table in every.items():
        differences.append(same_patching(
            table, activation_patching(local, CLEAN, CORRUPTED, foil=" red", site=site, method="attribution")))
    assert lm.remote.last.bytes_received == attribution_bytes(local, T, sites=3)
    for target in (None, " green"):
        count = len(jobs)
        got = token_attribution(lm, PROMPT, target=target, method="grad_x_input")
        expected = token_attribution(local, PROMPT, target=target, method="grad_x_input")
        assert len(jobs) == count + 1 and jobs[-1].stats.outcome == "completed"
        differences.append(same_attribution(got, expected))
        assert got["score"].to_numpy().argmax() == expected["score"].to_numpy().argmax()
        assert lm.remote.last.bytes_received == grad_x_input_bytes(local, len(before.tokens), target=target is None)
    assert no_weight_grads(local.model)
    local.model.requires_grad_(True)  # weights that ask for gradients: the backward still leaves them alone
    try:
        differences.append(same_patching(
            activation_patching(lm, CLEAN, CORRUPTED, foil=" red", method="attribution"),
            activation_patching(local, CLEAN, CORRUPTED, foil=" red", method="attribution")))
        token_attribution(lm, PROMPT, method="grad_x_input")
        assert no_weight_grads(local.model)
    finally:
        local.model.requires_grad_(False)
    print(f"{kind}: gradient modes, max difference remote vs local {max(differences):.1e}")
    assert hook_state(local.model) == hooks
    after = run_trace(local, PROMPT)
    assert np.array_equal(after.hidden_states, before.hidden_states)
    assert np.array_equal(after.last_logits, before.last_logits)


def test_smollm_cause(smollm, monkeypatch):
    """The embedded SmolLM2 (30 layers, several batches per grid): the page's France/Italy preset."""
    lm = remote_model(smollm, "local")
    jobs = counted_jobs(monkeypatch, lm)
    clean, corrupted = "The capital of France is", "The capital of Italy is"
    for site in ("resid", "mlp"):
        difference = same_patching(activation_patching(lm, clean, corrupted, answer=" Paris", foil=" Rome", site=site),
                                   activation_patching(smollm, clean, corrupted, answer=" Paris", foil=" Rome",
                                                       site=site))
        print(f"SmolLM2 exact patching ({site}): max difference {difference:.1e}")
    difference = same_attribution(token_attribution(lm, clean), token_attribution(smollm, clean))
    print(f"SmolLM2 occlusion: max difference {difference:.1e}")
    assert len(jobs) == 3
    difference = same_patching(
        activation_patching(lm, clean, corrupted, answer=" Paris", foil=" Rome", method="attribution"),
        activation_patching(smollm, clean, corrupted, answer=" Paris", foil=" Rome", method="attribution"))
    print(f"SmolLM2 attribution patching (resid): max difference {difference:.1e}")
    got, expected = (token_attribution(model, clean, method="grad_x_input") for model in (lm, smollm))
    difference = same_attribution(got, expected)
    assert got["score"].to_numpy().argmax() == expected["score"].to_numpy().argmax()
    print(f"SmolLM2 gradient x input: max difference {difference:.1e}")
    assert len(jobs) == 5 and no_weight_grads(smollm.model)


def test_cause_bytes_405b():
    """Llama-3.1-405B on the meta device, the lecture's 12 tokens: the patching grid (126 x 12 float64 and two
    metrics) and occlusion's 12 drops come back, far under the 64 MB page budget."""
    lm = meta_model(llama_405b_config())
    assert (lm.num_layers, lm.vocab_size) == (126, 128_256)
    grid = patching_bytes(lm, LECTURE_TOKENS, MAX_ROWS_PER_FORWARD)
    every = patching_bytes(lm, LECTURE_TOKENS, MAX_ROWS_PER_FORWARD, sites=3)
    assert 3 * 126 * 12 * 8 < every < 3 * 126 * 12 * 8 + 4096 and every <= PAGE_BUDGET
    drops = occlusion_bytes(lm, LECTURE_TOKENS, ROWS_PER_FORWARD)
    assert 126 * 12 * 8 < grid < 126 * 12 * 8 + 4096 and grid <= PAGE_BUDGET
    assert 12 * 8 < drops < 4096
    contributions, top = blocks_bytes(lm, LECTURE_TOKENS), blocks_bytes(lm, LECTURE_TOKENS, k=30)
    assert 253 * 13 * 8 < contributions < 253 * 13 * 8 + 4096  # (P, T) sizes and (P,) effects, float64
    assert contributions + 253 * 2 * 30 * 12 < top < contributions + 253 * 2 * 30 * 12 + 4096  # the page's largest k
    assert top <= PAGE_BUDGET and reads_bytes(lm.num_layers) < 126 * 6 * 8 + 2048
    page = blocks_bytes(lm, LECTURE_TOKENS, k=30, reads=True)  # the Block writes page's one job
    assert top + 126 * 6 * 8 <= page < top + 126 * 6 * 8 + 1024 and page <= PAGE_BUDGET
    estimate, estimates = attribution_bytes(lm, LECTURE_TOKENS), attribution_bytes(lm, LECTURE_TOKENS, sites=3)
    assert 126 * 12 * 8 < estimate < 126 * 12 * 8 + 4096 and estimate <= PAGE_BUDGET  # the exact grid's size
    assert 3 * 126 * 12 * 8 < estimates < 3 * 126 * 12 * 8 + 4096 and estimates <= PAGE_BUDGET
    gradient = grad_x_input_bytes(lm, LECTURE_TOKENS)
    assert 12 * 8 < gradient < 4096
    print(f"Llama-3.1-405B: attribution patching {estimate:,} bytes (one site), {estimates:,} (all three), "
          f"gradient x input {gradient:,} bytes")
    print(f"Llama-3.1-405B: activation patching page {grid:,} bytes (one site), {every:,} (all three), occlusion {drops:,} bytes, "
          f"block contributions {contributions:,} bytes, block writes page (k = 30) {top:,} bytes, "
          f"what blocks read {reads_bytes(lm.num_layers):,} bytes, the two in one job {page:,}")


# ---------------------------------------------------------------- the pages, model A simulated


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory, tiny_folders):
    """A copy of the tiny Llama of this module only: its models are new to the server's model store."""
    import shutil

    return str(shutil.copytree(tiny_folders["llama"], tmp_path_factory.mktemp("remote-cause") / "tiny-llama"))


def _items(app) -> dict:
    return {item.name: item for item in app.session_state["_export_items"] if item.kind == "chart"}


def same_scores(got, expected) -> None:
    """What a page drew: the same rows (labels, tokens) and scores within TOLERANCE, the same strongest one."""
    labels = [c for c in ("layer", "position", "token") if c in expected.columns]
    assert got[labels].reset_index(drop=True).equals(expected[labels].reset_index(drop=True))
    np.testing.assert_allclose(got["score"].to_numpy(float), expected["score"].to_numpy(float), atol=TOLERANCE)
    assert got["score"].to_numpy().argmax() == expected["score"].to_numpy().argmax()


@pytest.mark.app
def test_activation_patching_page_runs_a_remote_model(page_folder, jobs):
    """A on remote="local", B (embedded Gemma 3 270M) here: A's grid is core's local grid, from ONE job; asking
    for both methods adds ONE job (the attribution grid, core's local one; the exact grid is cached)."""
    from tests.apptest import assert_clean, run_page

    query = {"a": page_folder, "place_a": "remote", "ndif_a": "local", "ap_clean": CLEAN, "ap_corrupted": CORRUPTED,
             "ap_answer": "", "ap_foil": " red"}
    app = run_page("views/cause/activation_patching.py", query=query)
    assert_clean(app)
    assert not app.error and len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    expected = activation_patching(load_model(page_folder, device="cpu"), CLEAN, CORRUPTED, foil=" red")
    same_scores(_items(app)["patching_resid_exact_A"].table, expected)
    assert "patching_resid_exact_B" in _items(app)

    app.selectbox(key="ap_method").set_value("both").run()
    assert_clean(app)
    assert not app.error and len(jobs) == 2 and jobs[-1].stats.outcome == "completed"
    assert not any("runs remotely" in i.value for i in app.info)
    items = _items(app)
    assert "patching_resid_attribution_A" in items and "patching_resid_attribution_B" in items
    same_scores(items["patching_resid_exact_A"].table, expected)
    same_scores(items["patching_resid_attribution_A"].table, activation_patching(
        load_model(page_folder, device="cpu"), CLEAN, CORRUPTED, foil=" red", method="attribution"))

    app.selectbox(key="ap_method").set_value("exact")
    app.selectbox(key="ap_site").set_value("all").run()  # every site of A in one more job
    assert_clean(app)
    assert not app.error and len(jobs) == 3 and jobs[-1].stats.outcome == "completed"
    local = load_model(page_folder, device="cpu")
    for site in SITES:
        same_scores(_items(app)[f"patching_{site}_exact_A"].table,
                    activation_patching(local, CLEAN, CORRUPTED, foil=" red", site=site))


@pytest.mark.app
def test_input_tokens_page_runs_a_remote_model(page_folder, jobs):
    """A simulated: its occlusion and gradient × input scores on the shared strip are core's local ones, ONE
    job each."""
    from tests.apptest import assert_clean, run_page

    query = {"a": page_folder, "place_a": "remote", "ndif_a": "local", "it_prompt": PROMPT, "it_target": "",
             "it_method": "both"}
    app = run_page("views/cause/input_tokens.py", query=query)
    assert_clean(app)
    assert not app.error and len(jobs) == 2 and all(job.stats.outcome == "completed" for job in jobs)
    assert not any("runs remotely" in i.value for i in app.info)
    items = _items(app)
    local = load_model(page_folder, device="cpu")
    got = items["input_tokens_bars_A"].table
    assert set(got["method"]) == set(items["input_tokens_bars_B"].table["method"]) == {"Occlusion", "Gradient × input"}
    same_scores(got[got["method"] == "Occlusion"], token_attribution(local, PROMPT))
    same_scores(got[got["method"] == "Gradient × input"], token_attribution(local, PROMPT, method="grad_x_input"))
    assert "input_tokens_shaded_occlusion" in items and "input_tokens_shaded_grad_x_input" in items


@pytest.mark.app
def test_block_writes_page_runs_a_remote_model(page_folder, jobs):
    """A simulated: its write sizes, direct effects, token lists and the held-input demonstration are core's
    local numbers, all from ONE job (the whole page: one queue wait); a new demonstration prompt is one more job."""
    from tests.apptest import assert_clean, run_page

    query = {"a": page_folder, "place_a": "remote", "ndif_a": "local", "bw_prompt": PROMPT, "bw_target": ""}
    app = run_page("views/cause/block_writes.py", query=query)
    assert_clean(app)
    assert not app.error and len(jobs) == 1 and all(job.stats.outcome == "completed" for job in jobs)
    local = load_model(page_folder, device="cpu")
    assert jobs[0].stats.bytes_received == blocks_bytes(local, len(local.tokenizer(PROMPT)["input_ids"]), k=10,
                                                        reads=True)
    items = _items(app)
    expected = block_contributions(local, PROMPT)
    for block in ("attn", "mlp"):
        got, own = items[f"block_write_sizes_{block}_A"].table, expected[expected["block"] == block]
        np.testing.assert_allclose(got["norm"].to_numpy(float), own["norm"].to_numpy(float), atol=TOLERANCE)
    last = expected[expected["position"] == expected["position"].max()]
    np.testing.assert_allclose(items["block_logit_effects_A"].table["logit_effect"].to_numpy(float),
                               last["logit_effect"].to_numpy(float), atol=TOLERANCE)
    shown = items["block_token_effects_A"].table
    effects = block_token_effects(local, PROMPT, k=10)
    assert shown.drop(columns="logit_effect").reset_index(drop=True).equals(
        effects.loc[shown.index].drop(columns="logit_effect").reset_index(drop=True))
    reads = what_blocks_read(local, "The apple is green. What color is the apple?",
                             "The apple is red. What color is the apple?")
    np.testing.assert_allclose(items["what_blocks_read_A"].table["held_output_change"].to_numpy(float),
                               reads["held_output_change"].to_numpy(float), atol=TOLERANCE)
    app.text_input(key="bw_changed").input("A apple is red. What color is the apple?").run()
    assert_clean(app)
    assert not app.error, [e.value for e in app.error]
    assert len(jobs) == 2 and jobs[1].stats.outcome == "completed"
    reads = what_blocks_read(local, "The apple is green. What color is the apple?",
                             "A apple is red. What color is the apple?")
    np.testing.assert_allclose(_items(app)["what_blocks_read_A"].table["held_output_change"].to_numpy(float),
                               reads["held_output_change"].to_numpy(float), atol=TOLERANCE)
