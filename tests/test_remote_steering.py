"""Steering of a remote model: core's own functions, each call ONE job, the local numbers.

Through nnsight's local simulation of NDIF (remote="local": the request serialized as for NDIF, our
modules hidden while it is deserialized) on the tiny Llama and Gemma 3 and the embedded SmolLM2:
steering_vector / steering_directions within 1e-5 of the local path and of the test's own forward
pass, layer_sweep's table within 1e-5 (float32 models) with the same top tokens, steered_continuations
and with_and_without give the local token ids exactly; every call is one job; the model is left as it
was (no hooks, a plain local run bit for bit the same). What comes back for Llama-3.1-405B is sized on
the meta device. The page with model A simulated shows core's local numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import core.intervene.steering as steering
from core import load_model, run_trace
from core.intervene.generation import Steer, generate
from core.intervene.steering import (directions_from_traces, layer_sweep, steered_continuations, steering_directions,
                                     steering_vector, with_and_without)
from core.remote.budget import PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.model import remote_model
from core.remote.steering import direction_bytes, sweep_bytes
from tests.test_remote import folders, jobs, no_ambient_key  # noqa: F401 (fixtures)
from tests.test_remote_lens import counted_jobs, hook_state

POSITIVE = ["the apple is green.", "I ate an apple for breakfast", "how are you?"]
NEGATIVE = ["nice to meet you", "The capital of France is Paris."]
HELD_OUT = ["what color is the apple?", "how about you?"]
WORDS = (["apple"], ["you"])


def own_direction(lm, layer: int) -> np.ndarray:
    """The test's own mean difference from plain transformers forwards (hidden_states[layer] at the last token)."""
    def last(prompt):
        ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
        with torch.inference_mode():
            return lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1].double()

    return (torch.stack([last(p) for p in POSITIVE]).mean(0) - torch.stack([last(p) for p in NEGATIVE]).mean(0)).numpy()


def same_sweep(got: pd.DataFrame, expected: pd.DataFrame, tolerance: float = 1e-5) -> float:
    """Same layers, depths and top tokens; the largest shift / KL difference (asserted <= tolerance)."""
    assert list(got.columns) == list(expected.columns)
    assert got[["layer", "relative_depth", "top_token"]].equals(expected[["layer", "relative_depth", "top_token"]])
    difference = float(np.abs(got[["shift", "kl"]].to_numpy(float) - expected[["shift", "kl"]].to_numpy(float)).max())
    assert difference <= tolerance
    return difference


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_simulated_steering_is_the_local_steering(folders, monkeypatch, kind):
    local = load_model(str(folders[kind]), device="cpu")
    before = run_trace(local, HELD_OUT[0])
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    count = local.num_layers

    for layer in range(count):  # one job each, only that layer's direction back
        got = steering_vector(lm, POSITIVE, NEGATIVE, layer)
        np.testing.assert_allclose(got, steering_vector(local, POSITIVE, NEGATIVE, layer), atol=1e-5)
        np.testing.assert_allclose(got, own_direction(local, layer), rtol=1e-5, atol=1e-5)
    assert len(jobs) == count and lm.remote.last.bytes_received == direction_bytes(local, 1)

    directions = steering_directions(lm, POSITIVE, NEGATIVE)
    expected = directions_from_traces([run_trace(local, p) for p in POSITIVE], [run_trace(local, p) for p in NEGATIVE])
    assert directions.shape == (count, local.hidden_size) and np.abs(directions - expected).max() <= 1e-5
    assert len(jobs) == count + 1 and lm.remote.last.bytes_received == direction_bytes(local, count)

    strength = 8.0 / float(np.linalg.norm(expected, axis=1).mean())  # a push the tiny model's next token feels
    table = layer_sweep(lm, expected, HELD_OUT, strength, *WORDS)
    difference = same_sweep(table, layer_sweep(local, expected, HELD_OUT, strength, *WORDS))
    assert (table["kl"] > 0).all()  # the steer acted at every layer where the model ran
    assert len(jobs) == count + 2 and lm.remote.last.bytes_received == sweep_bytes(local, 2, count, steering.MAX_ROWS)
    monkeypatch.setattr(steering, "MAX_ROWS", 3)  # several batches, layers out of order and repeated
    picked = [count - 1, 0, 0, 1]
    same_sweep(layer_sweep(lm, expected, HELD_OUT, -strength, *WORDS, layers=picked),
               layer_sweep(local, expected, HELD_OUT, -strength, *WORDS, layers=picked))
    assert len(jobs) == count + 3
    got = steered_continuations(lm, expected, HELD_OUT[0], 4 * strength, layers=picked, max_new_tokens=5)
    assert got.equals(steered_continuations(local, expected, HELD_OUT[0], 4 * strength, layers=picked,
                                            max_new_tokens=5))
    assert len(jobs) == count + 4 and lm.remote.last.bytes_received < 4096  # the new ids only

    steer = Steer(1, expected[1], 4 * strength)
    plain, steered = with_and_without(lm, HELD_OUT[1], steer, max_new_tokens=6)
    assert len(jobs) == count + 5 and all(job.stats.outcome == "completed" for job in jobs)
    assert plain.token_ids == generate(local, HELD_OUT[1], max_new_tokens=6).token_ids
    assert steered.token_ids == generate(local, HELD_OUT[1], max_new_tokens=6, steer=steer).token_ids
    assert steered.settings == {"steer_layer": 1, "steer_strength": 4 * strength}

    assert hook_state(local.model) == hooks  # no job left a hook or a wrapper behind
    after = run_trace(local, HELD_OUT[0])
    assert np.array_equal(after.hidden_states, before.hidden_states)
    assert np.array_equal(after.last_logits, before.last_logits)
    print(f"{kind}: sweep max difference {difference:.1e}")


@pytest.mark.embedded
def test_smollm_sweep(smollm, monkeypatch):
    """The embedded SmolLM2 (chat template on): the refusal preset's directions and a sweep of three layers."""
    preset = steering.PRESETS["Refuse vs comply (lecture; chat on)"]
    lm = remote_model(smollm, "local")
    jobs = counted_jobs(monkeypatch, lm)
    directions = steering_directions(lm, preset["positive"][:2], preset["negative"][:2], chat=True)
    expected = steering_directions(smollm, preset["positive"][:2], preset["negative"][:2], chat=True)
    assert np.abs(directions - expected).max() <= 1e-5
    args = (preset["held_out"][:1], 4.0, preset["positive_words"], preset["negative_words"])
    difference = same_sweep(layer_sweep(lm, expected, *args, chat=True, layers=[3, 12, 24]),
                            layer_sweep(smollm, expected, *args, chat=True, layers=[3, 12, 24]))
    assert len(jobs) == 2
    print(f"SmolLM2 sweep: max difference {difference:.1e}")


def test_steering_bytes_405b():
    """Llama-3.1-405B on the meta device: every layer's direction (126 x 16,384 float32) and the sweep of the
    lecture's 3 held-out prompts at every layer, each under the page budget."""
    lm = meta_model(llama_405b_config())
    directions, one = direction_bytes(lm, lm.num_layers), direction_bytes(lm, 1)
    sweep = sweep_bytes(lm, 3, lm.num_layers, steering.MAX_ROWS)
    assert 126 * 16_384 * 4 <= directions <= 126 * 16_384 * 4 + 4096 and directions <= PAGE_BUDGET
    assert 16_384 * 4 <= one <= 16_384 * 4 + 4096
    assert 3 * 126 * (4 + 4 + 8) <= sweep < 2**16
    print(f"Llama-3.1-405B: directions {directions:,} bytes (one layer {one:,}), sweep {sweep:,} bytes")


@pytest.mark.app
@pytest.mark.embedded
def test_page_shows_the_simulated_models_steering(folders, jobs, monkeypatch):
    """A on remote="local", B the embedded Gemma here: A's direction length, continuations and sweep are core's
    local numbers; the first render is one job (every direction), Generate one more (both continuations) and
    "Try every layer" one more (the sweep)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))
    import ui
    from tests.apptest import assert_clean, run_page
    from streamlit import dataframe_util

    page_slots = ui.page_slots
    monkeypatch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, runs_remote=True))
    folder = str(folders["llama"])
    app = run_page("views/intervene/steering.py",
                   query={"a": folder, "place_a": "remote", "ndif_a": "local", "st_tokens": "4"})
    assert_clean(app)
    assert not [e.value for e in app.error] and len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    state = app.session_state
    positive, negative = ([p.strip() for p in state[key].splitlines() if p.strip()] for key in ("st_positive", "st_negative"))
    local = load_model(folder, device="cpu")
    directions = steering_directions(local, positive, negative)
    layer = min(local.num_layers - 1, int(round(state["st_depth"] * local.num_layers)))
    assert any(c.value.startswith(f"Layer {layer} of {local.num_layers} · direction length "
                                  f"{np.linalg.norm(directions[layer]):.2f}") for c in app.caption)

    next(b for b in app.button if b.label == "Generate").click().run()
    assert_clean(app)
    assert len(jobs) == 2  # both of A's continuations in one job; the directions were kept
    steer = Steer(layer, directions[layer], state["st_strength"])
    shown = [c.value for c in app.code]
    for made in with_and_without(local, state["st_test"], steer, max_new_tokens=4):
        assert made.text in shown

    next(b for b in app.button if b.label == "Try every layer").click().run()
    assert_clean(app)
    assert len(jobs) == 3 and all(job.stats.outcome == "completed" for job in jobs)
    held_out = [p.strip() for p in state["st_held_out"].splitlines() if p.strip()]
    words = [[w.strip() for w in state[key].split(",") if w.strip()] for key in ("st_words_1", "st_words_2")]
    expected = layer_sweep(local, directions, held_out, state["st_strength"], *words)
    drawn = next(frame for frame in (dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data)
                                     for chart in app.get("vega_lite_chart") for d in chart.proto.datasets)
                 if "shift" in frame.columns)  # the sweep chart's rows (its other layers draw the rule)
    got = drawn[drawn["model"] == app.session_state["_slots"][0].title].sort_values("layer")
    assert got["layer"].tolist() == expected["layer"].tolist()
    np.testing.assert_allclose(got[["shift", "kl"]].to_numpy(float), expected[["shift", "kl"]].to_numpy(float),
                               atol=1e-5)


@pytest.mark.app
@pytest.mark.embedded
def test_a_failed_direction_job_is_a_message_in_its_column(folders, monkeypatch):
    """A remote model whose job fails: its message in A's column, asked once in the run; B still draws its caption."""
    import streamlit as st

    import core.remote.steering as remote_steering
    from core.remote.errors import RemoteError
    from tests.apptest import assert_clean, run_page

    import ui

    asked = []

    def failing(*args, **kwargs):
        asked.append(args)
        raise RemoteError("NDIF is down (test)")

    st.cache_data.clear()
    page_slots = ui.page_slots
    monkeypatch.setattr(ui, "page_slots", lambda slots, runs_remote: page_slots(slots, runs_remote=True))
    monkeypatch.setattr(remote_steering, "remote_directions", failing)
    app = run_page("views/intervene/steering.py",
                   query={"a": str(folders["llama"]), "place_a": "remote", "ndif_a": "local", "st_tokens": "3"})
    assert_clean(app)
    assert [e.value for e in app.error] == ["NDIF is down (test)"] and len(asked) == 1
    assert sum(c.value.startswith("Layer ") for c in app.caption) == 1  # model B's column


def test_a_model_on_the_meta_device_steers_through_nnsights_client(folders, jobs):
    """remote=URL: each request (a direction, the sweep, the pair of continuations) is built on the meta device
    and sent by nnsight's real client to a fake NDIF on 127.0.0.1 (the live NDIF cannot be reached from here);
    its canned answer becomes the vector, the table and the texts."""
    from tests.fake_ndif import FakeNDIF
    from tests.test_page_remote import KEY, REPO

    meta = load_model(str(folders["llama"]), weights=False)
    hidden, count = meta.hidden_size, meta.num_layers
    vector = torch.arange(hidden, dtype=torch.float32)[None]  # (1, H)
    scores = [[{"shift": torch.tensor([0.5, -1.0, 2.0]), "kl": torch.tensor([0.1, 0.2, 0.3]),
                "top": torch.tensor([4, 5, 6]), "finite": torch.tensor(True)}] for _ in HELD_OUT]
    pair = [torch.tensor([5, 9]), torch.tensor([7, 3])]
    answers = []
    for canned in (vector, scores, pair):
        with FakeNDIF(["complete"], result={"result": canned}, hosted=(REPO,), keys=(KEY,)) as server:
            lm = remote_model(meta, server.url, key=KEY, repo_id=REPO)
            assert lm.device == "meta" and not lm.has_weights
            if canned is vector:
                answers.append(steering_vector(lm, POSITIVE, NEGATIVE, 1))
            elif canned is scores:
                answers.append(layer_sweep(lm, np.ones((count, hidden), np.float32), HELD_OUT, 2.0, *WORDS))
            else:
                answers.append(with_and_without(lm, HELD_OUT[0], Steer(1, np.ones(hidden, np.float32), 2.0),
                                                max_new_tokens=2))
            assert len(server.model_keys) == 1
    assert len(jobs) == 3 and all(job.stats.outcome == "completed" for job in jobs)
    np.testing.assert_array_equal(answers[0], vector[0].numpy())
    assert answers[1]["shift"].tolist() == [0.5, -1.0, 2.0] and answers[1]["layer"].tolist() == list(range(count))
    np.testing.assert_allclose(answers[1]["kl"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert [made.token_ids for made in answers[2]] == [(5, 9), (7, 3)]
    assert answers[2][1].text == meta.tokenizer.decode([7, 3], skip_special_tokens=True)
