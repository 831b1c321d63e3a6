"""The Embeddings page on a remote model (issue 18): the word map and the whole page from ONE job.

Model A is a tiny random model (tests/tiny.py) or the embedded SmolLM2 on nnsight's local simulation of
NDIF (`remote="local"`); what it gives must be the local path's numbers on the same weights: the
neighbours and arithmetic ids identical, the PCA map within 1e-5 with the same signs, checked also
against an independent NumPy PCA of the table's rows. Llama-3.1-405B's page is sized on the meta device.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core import load_model
from core.model.reading import embedding_table
from core.remote.budget import PAGE_BUDGET, llama_405b_config, meta_model
from core.remote.embeddings import page_bytes
from core.remote.model import remote_model
from core.weights.embeddings import arithmetic, nearest_tokens, parse_word_groups, project_words
from core.weights.embeddings_page import embeddings_page
from tests.apptest import assert_clean, run_page
from tests.test_page_remote import REPO, closed_port, messages, remote_facts
from tests.test_pages_context import chart_data
from tests.test_remote import jobs, no_ambient_key  # noqa: F401 (fixtures; autouse: no NDIF key or host from this machine)
from tests.test_remote_lens import counted_jobs, hook_state
from tests.test_remote_pages import same_neighbours

PAGE = "views/weights/embeddings.py"
FRUITS = ("Fruits: apple, banana, orange, grape, peach, lemon\n"
          "Tech companies: Apple, Google, Microsoft, Amazon, Samsung, Intel")  # the page's default map
WORDS = parse_word_groups(FRUITS)
SUMS = ("冷", "cold", "small", "小")  # the page's default arithmetic


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_folders):
    """Copies of the tiny models of this module only: their models are new to the server's model store."""
    root = tmp_path_factory.mktemp("remote-embeddings")
    return {kind: str(shutil.copytree(tiny_folders[kind], root / f"tiny-{kind}")) for kind in ("llama", "gemma3")}


def local_model(which, folders, request):
    return request.getfixturevalue("smollm") if which == "smollm" else load_model(folders[which], device="cpu")


def numpy_pca(lm, pairs) -> tuple[np.ndarray, np.ndarray]:
    """An independent PCA: the covariance's eigenvectors of the mean rows, largest loading made positive."""
    table = embedding_table(lm).detach().double().numpy()
    vectors = np.stack([table[lm.tokenizer(w, add_special_tokens=False)["input_ids"]].mean(axis=0)
                        for _, w in pairs])
    centred = vectors - vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = eigenvectors[:, ::-1][:, :2]  # (H, 2)
    top = top * np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])
    return centred @ top, eigenvalues[::-1][:2] / eigenvalues.sum()


def same_map(got, expected) -> float:
    """Identical words, groups and pieces; the largest coordinate difference (asserted <= 1e-5)."""
    assert got[["word", "group", "pieces", "n_pieces"]].equals(expected[["word", "group", "pieces", "n_pieces"]])
    difference = float(np.abs(got[["x", "y"]].to_numpy() - expected[["x", "y"]].to_numpy()).max())
    assert difference <= 1e-5
    np.testing.assert_allclose(got.attrs["explained"], expected.attrs["explained"], atol=1e-9)
    return difference


@pytest.mark.parametrize("which", ["llama", "gemma3", pytest.param("smollm", marks=pytest.mark.embedded)])
def test_project_words_simulated_is_local(folders, monkeypatch, request, which):
    """project_words through the simulation = the local map (same signs) = an independent NumPy PCA, one job,
    only the n x 2 coordinates and 2 shares back; the model is left as it was (no hooks)."""
    local = local_model(which, folders, request)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    words = WORDS if which == "smollm" else [("words", w) for w in ("apple", "green", "the", "what", "color")]
    got, expected = project_words(lm, words), project_words(local, words)
    difference = same_map(got, expected)
    xy, explained = numpy_pca(local, words)
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), xy, atol=1e-6)
    np.testing.assert_allclose(got.attrs["explained"], explained, atol=1e-9)
    assert len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    assert lm.remote.last.bytes_received == page_bytes([], len(words), local.parts.layout.hidden_size)
    assert hook_state(local.model) == hooks
    print(f"{which} map of {len(words)} words: max coordinate difference {difference:.1e}, "
          f"{lm.remote.last.bytes_received:,} bytes back")
    with pytest.raises(ValueError, match="at least 3"):
        project_words(lm, ["apple", "green"])
    assert len(jobs) == 1  # an invalid list is refused before any job


@pytest.mark.parametrize("which", ["llama", "gemma3", pytest.param("smollm", marks=pytest.mark.embedded)])
def test_embeddings_page_simulated_is_the_separate_local_calls(folders, monkeypatch, request, which):
    """The page's neighbours, arithmetic (with the expected token's rank) and map in ONE job = nearest_tokens,
    arithmetic and project_words locally; a part with a bad input is its message only, still one job."""
    local = local_model(which, folders, request)
    lm = remote_model(local, "local")
    hooks, jobs = hook_state(local.model), counted_jobs(monkeypatch, lm)
    ranks = []
    cases = [("apple", SUMS), ("#5", ("Paris", "France", "Italy", "#7")), ("AirPods", ("a", "b", "c", None))]
    for query, sums in cases:
        page = embeddings_page(lm, query, 10, sums, WORDS)
        assert page.errors == {}
        same_neighbours(page.neighbours, nearest_tokens(local, query, 10))
        same_neighbours(page.arithmetic, arithmetic(local, *sums[:3], 10, expected=sums[3]))
        difference = same_map(page.projection, project_words(local, WORDS))
        ranks.append(page.arithmetic.attrs.get("expected_rank"))
        rank = ranks[-1] is not None
        assert lm.remote.last.bytes_received == page_bytes([(10, False), (10, rank)], len(WORDS),
                                                           local.parts.layout.hidden_size)
        print(f"{which} page {query!r}: ids identical, map within {difference:.1e}, "
              f"expected rank {ranks[-1]}, {lm.remote.last.bytes_received:,} bytes back")
    assert ranks[1] is not None  # the rank of a single-token answer came back with the rest
    assert len(jobs) == 3 and all(job.stats.outcome == "completed" for job in jobs)
    assert embeddings_page(local, "apple", 10, SUMS, WORDS).errors == {}  # the local page: the same parts

    bad = embeddings_page(lm, "apple", 10, SUMS, WORDS[:2])  # too few words: the map's message, the rest sent
    assert "at least 3" in bad.errors["projection"] and bad.projection is None and len(jobs) == 4
    same_neighbours(bad.neighbours, nearest_tokens(local, "apple", 10))
    with pytest.raises(ValueError, match="at least 3"):
        bad.part("projection")
    assert embeddings_page(lm, " ", 10, None, ["a", "b"]).errors.keys() == {"neighbours", "projection"}
    assert len(jobs) == 4  # nothing valid: no job
    assert hook_state(local.model) == hooks


def test_embeddings_page_bytes_405b():
    """Llama-3.1-405B on the meta device: the page's defaults (10 neighbours, 10 arithmetic rows with the
    expected token's rank, the 12-word map) come back in a few kB, far under the 64 MB page budget."""
    lm = meta_model(llama_405b_config())
    H = lm.parts.layout.hidden_size
    assert tuple(lm.parts.embed.weight.shape) == (128_256, 16_384) and H == 16_384
    size = page_bytes([(10, False), (10, True)], len(WORDS), H)
    assert 2 * 10 * (8 + 4) + 8 + len(WORDS) * 2 * 8 + 2 * 8 < size <= 16_384 < PAGE_BUDGET
    print(f"Llama-3.1-405B embeddings page: {size:,} bytes (the table: {128_256 * 16_384 * 2:,} bf16)")


@pytest.mark.app
@pytest.mark.embedded  # model B: the embedded Gemma 3 270M
def test_embeddings_page_runs_a_simulated_model_in_one_job(folders, jobs):
    """A on remote="local", B here: A's neighbours, arithmetic and map are core's local numbers from ONE job;
    a new k or a new arithmetic is one more job, inputs seen before none; Home's bytes are the page's."""
    folder = folders["llama"]
    app = run_page(PAGE, query={"a": folder, "place_a": "remote", "ndif_a": "local", "emb_query": "apple"})
    assert_clean(app)
    assert not app.error and len(jobs) == 1 and jobs[0].stats.outcome == "completed"
    local = load_model(folder, device="cpu")
    frames = [f.value for f in app.dataframe]
    near, arith = frames[0], frames[2]  # A's neighbours, B's, A's arithmetic, B's
    expected = nearest_tokens(local, "apple", 10)
    assert near["token_id"].tolist() == expected["token_id"].tolist()
    np.testing.assert_allclose(near["cosine"].to_numpy(float), expected["cosine"], atol=1e-6)
    expected = arithmetic(local, *SUMS[:3], 10, expected=SUMS[3])
    assert arith["token_id"].tolist() == expected["token_id"].tolist()
    np.testing.assert_allclose(arith["cosine"].to_numpy(float), expected["cosine"], atol=1e-6)
    assert any(m.label == "Jaccard" for m in app.metric)  # the comparison used A's list of the same job
    maps = [data for data in map(chart_data, app.get("vega_lite_chart")) if {"x", "y", "word"} <= set(data.columns)]
    expected = project_words(local, WORDS)
    assert len(maps) == 2 and maps[0]["word"].tolist() == expected["word"].tolist()  # A's map first, then B's
    np.testing.assert_allclose(maps[0][["x", "y"]].to_numpy(float), expected[["x", "y"]].to_numpy(), atol=1e-6)

    app.number_input(key="emb_k").set_value(5).run()  # a new k: the page's one new job
    assert_clean(app)
    assert not app.error and len(jobs) == 2
    near = app.dataframe[0].value
    assert near["token_id"].tolist() == nearest_tokens(local, "apple", 5)["token_id"].tolist()
    app.button(key="emb-arith-king − man + woman").click().run()  # new arithmetic: the page's one new job
    assert_clean(app)
    assert not app.error and len(jobs) == 3
    king = arithmetic(local, "king", "man", "woman", 5, expected="queen")
    assert app.dataframe[2].value["token_id"].tolist() == king["token_id"].tolist()
    app.button(key="emb-arith-冷 − cold + small").click().run()  # back: cached, no job
    assert_clean(app)
    assert len(jobs) == 3
    app.switch_page("views/home.py").run()
    rank = king.attrs.get("expected_rank") is not None  # the last job's (the king arithmetic)
    size = page_bytes([(5, False), (5, rank)], len(WORDS), local.parts.layout.hidden_size)
    assert remote_facts(app)["Bytes received"] == f"{size:,}"


@pytest.mark.app
@pytest.mark.embedded  # model B: the embedded Gemma 3 270M
def test_embeddings_page_with_an_unreachable_ndif(folders, jobs):
    """A on an NDIF that cannot be reached (on the meta device: its pieces from the tokenizer alone): the one
    failed job is a message in each of A's columns, B's lists and map draw; nothing is cached, so the next
    run asks again, once."""
    url = f"http://127.0.0.1:{closed_port()}"
    app = run_page(PAGE, query={"a": folders["llama"], "place_a": "remote", "ndif_a": "url", "ndif_url_a": url,
                                "ndif_repo_a": REPO, "emb_query": "AirPods"})
    assert_clean(app)
    assert app.session_state["_slots"][0].lm.device == "meta"
    errors = messages(app, "error")  # A's neighbours, arithmetic and map columns
    assert len(errors) == 3 and all(e.startswith(f"Offline: could not reach NDIF at {url}") for e in errors)
    assert [c.error[0].value for c in app.columns if c.error] == errors  # in A's columns only
    assert any("cuts 'AirPods' into" in m for m in messages(app, "info"))  # the piece picker needs no job
    assert len(jobs) == 1 and jobs[0].stats.outcome == "failed"
    assert len(app.dataframe) == 2  # B's neighbours and arithmetic
    maps = [data for data in map(chart_data, app.get("vega_lite_chart")) if {"x", "y", "word"} <= set(data.columns)]
    assert len(maps) == 1 and maps[0]["word"].tolist() == [w for _, w in WORDS]  # B's map
    app.run()
    assert len(jobs) == 2 and len(messages(app, "error")) == 3  # not cached: asked again, once


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_resolve_query_reads_the_servers_table(which, folders, monkeypatch):
    """resolve_query of a simulated model: the same ids, pieces and vector (the mean of the pieces' rows, read
    where the table is, H floats back), in one job."""
    from core.weights.embeddings import resolve_query

    local = load_model(folders[which], device="cpu")
    lm = remote_model(local, "local")
    jobs = counted_jobs(monkeypatch, lm)
    for query in ("apple", "the apple tree", "#7"):
        expected, got = resolve_query(local, query), resolve_query(lm, query)
        assert got.token_ids == expected.token_ids and got.pieces == expected.pieces
        table = embedding_table(local).float()
        assert np.array_equal(expected.vector.numpy(), table[list(expected.token_ids)].mean(dim=0).numpy())
        assert np.abs(got.vector.numpy() - expected.vector.numpy()).max() == 0.0
    assert len(jobs) == 3 and all(job.stats.outcome == "completed" for job in jobs)
