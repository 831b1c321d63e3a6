"""Nearest tokens, arithmetic, overlap and projection, checked against brute force written here."""

import numpy as np
import pandas as pd
import pytest
import torch

from core import load_model
from core.weights.embeddings import arithmetic, nearest_tokens, neighbour_overlap, normalise_token, parse_word_groups, project_words, top_cosine_rows, visible
from core.model.reading import compute_inverse_norms
from tests.apptest import assert_clean, run_page


def all_cosines(table: torch.Tensor, vector: np.ndarray, exclude=()) -> np.ndarray:
    """Cosine with every row, in float64 NumPy."""
    rows = table.detach().double().numpy()
    cos = rows @ vector / (np.linalg.norm(rows, axis=1) * np.linalg.norm(vector))
    cos[list(exclude)] = -np.inf
    return cos


def brute_force(table: torch.Tensor, vector: np.ndarray, k: int, exclude=()) -> tuple[list[int], np.ndarray]:
    cos = all_cosines(table, vector, exclude)
    order = np.argsort(-cos, kind="stable")[:k]
    return order.tolist(), cos[order]


def table_of(lm) -> torch.Tensor:
    return lm.model.get_input_embeddings().weight


def check_against_brute_force(lm, query_ids: list[int], result: pd.DataFrame) -> None:
    vector = table_of(lm)[query_ids].detach().double().numpy().mean(axis=0)
    cos = all_cosines(table_of(lm), vector)
    ids, top = brute_force(table_of(lm), vector, len(result))
    assert list(result["rank"]) == list(range(1, len(result) + 1))
    np.testing.assert_allclose(result["cosine"], top, atol=1e-5)
    for got, want in zip(result["token_id"], ids):  # same ids, except swaps between float32-level ties
        assert got == want or abs(cos[got] - cos[want]) < 1e-5


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma", "tiny_gemma_vision"])
def test_single_token_matches_brute_force_and_finds_itself(fixture, request):
    lm = request.getfixturevalue(fixture)
    (token_id,) = lm.tokenizer(" apple", add_special_tokens=False)["input_ids"]  # one token: Ġapple
    result = nearest_tokens(lm, " apple", k=15)
    assert list(result.columns) == ["rank", "token", "token_id", "cosine"]
    assert result["token_id"].iloc[0] == token_id and result["cosine"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert result["token"].iloc[0] == " apple"
    assert nearest_tokens(lm, "Ġapple", k=1)["token_id"].iloc[0] == token_id  # the raw vocabulary piece
    check_against_brute_force(lm, [token_id], result)
    by_id = nearest_tokens(lm, token_id, k=15)
    assert by_id["token_id"].tolist() == result["token_id"].tolist()
    assert nearest_tokens(lm, f"#{token_id}", k=3)["token_id"].iloc[0] == token_id


def test_multi_piece_word_uses_the_mean_and_reports_the_pieces(tiny_llama):
    word = "Cupertino"  # not in the tiny corpus: several pieces
    ids = tiny_llama.tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    result = nearest_tokens(tiny_llama, word, k=12)
    assert result.attrs["query_ids"] == ids
    assert "".join(result.attrs["query_pieces"]) == word
    check_against_brute_force(tiny_llama, ids, result)


@pytest.mark.parametrize("query, message", [("", "Type a word"), ("   ", "Type a word"), (10**9, "does not exist"),
                                            ("#99999999", "does not exist"), (-1, "does not exist")])
def test_bad_queries_give_clear_messages(tiny_llama, query, message):
    with pytest.raises(ValueError, match=message):
        nearest_tokens(tiny_llama, query)


def test_config_only_model_says_it_needs_weights():
    from core import ModelLoadError

    lm = load_model("llama-3.2-3b", weights=False)
    with pytest.raises(ModelLoadError, match="weights"):
        nearest_tokens(lm, "apple")


def test_bf16_table_rescoring_matches_exact_order():
    torch.manual_seed(0)
    table = (torch.randn(20_000, 64) * torch.rand(20_000, 1)).to(torch.bfloat16)
    table[7] = 0  # an unused all-zero row must not produce NaN
    q = table[3].float() + 0.3 * torch.randn(64) * table[3].float().norm() / 8
    ids, cos = top_cosine_rows(table, compute_inverse_norms(table), q, 25, exclude={3})
    want, want_cos = brute_force(table, q.double().numpy(), 25, exclude={3})
    assert ids == want
    np.testing.assert_allclose(cos, want_cos, atol=1e-5)
    assert table.dtype == torch.bfloat16  # untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_inverse_norms_are_within_the_dtypes_rounding(dtype):
    torch.manual_seed(1)
    table = (torch.randn(3_000, 96) * torch.rand(3_000, 1) * 4).to(dtype)
    table[5] = 0
    exact = 1 / np.linalg.norm(table.double().numpy(), axis=1)  # (V,) float64, inf for the zero row
    ours = compute_inverse_norms(table).numpy()
    assert ours.dtype == np.float32 and ours[5] == 0
    keep = np.arange(len(exact)) != 5
    tolerance = 1e-6 if dtype == torch.float32 else 2.0**-8  # only the norm's output is rounded
    np.testing.assert_allclose(ours[keep], exact[keep], rtol=tolerance)


def test_load_computes_the_row_norms_so_the_first_query_does_not(tiny_folders, monkeypatch):
    lm = load_model(str(tiny_folders["llama"]), device="cpu")
    import core.model.reading

    def must_not_run(table):
        raise AssertionError("the first query recomputed the row norms")

    monkeypatch.setattr(core.model.reading, "compute_inverse_norms", must_not_run)
    result = nearest_tokens(lm, "#7", k=5)  # the first query on this freshly loaded model
    check_against_brute_force(lm, [7], result)
    norms = np.linalg.norm(table_of(lm).detach().double().numpy(), axis=1)  # (V,)
    exact = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)  # a zero (padding) row: 0
    np.testing.assert_allclose(core.model.reading.inverse_norms(lm).numpy(), exact, rtol=1e-6)


def test_arithmetic_matches_brute_force_and_excludes_inputs(tiny_gemma):
    result = arithmetic(tiny_gemma, "king", "man", "woman", k=10, expected="queen")
    table = table_of(tiny_gemma).detach().double().numpy()
    tok = tiny_gemma.tokenizer
    ids = [tok(w, add_special_tokens=False)["input_ids"] for w in ("king", "man", "woman")]
    vecs = [table[i].mean(axis=0) for i in ids]
    target = sum(s * v / np.linalg.norm(v) for s, v in zip((1, -1, 1), vecs))
    inputs = {i for piece_ids in ids for i in piece_ids}
    want, want_cos = brute_force(table_of(tiny_gemma), target, 10, exclude=inputs)
    assert result["token_id"].tolist() == want
    np.testing.assert_allclose(result["cosine"], want_cos, atol=1e-5)
    assert not inputs & set(result["token_id"])
    queen = tok("queen", add_special_tokens=False)["input_ids"]
    if len(queen) == 1:
        cos = all_cosines(table_of(tiny_gemma), target, exclude=inputs)
        assert result.attrs["expected_rank"] == int((cos > cos[queen[0]]).sum()) + 1


def arithmetic_rank_by_hand(lm, a, b, c, expected):
    """Rank of `expected` among all tokens by cosine to unit(a) - unit(b) + unit(c), inputs excluded (float64)."""
    table = table_of(lm).detach().double().numpy()
    ids = [lm.tokenizer(w, add_special_tokens=False)["input_ids"] for w in (a, b, c)]
    vectors = [table[i].mean(axis=0) for i in ids]
    target = sum(s * v / np.linalg.norm(v) for s, v in zip((1, -1, 1), vectors))
    wanted = lm.tokenizer(expected, add_special_tokens=False)["input_ids"]
    if len(wanted) != 1:
        return None
    cos = all_cosines(table_of(lm), target, exclude={i for piece_ids in ids for i in piece_ids})
    return int((cos > cos[wanted[0]]).sum()) + 1


def test_overlap_normalises_space_markers_and_keeps_case():
    assert normalise_token("Ġapple") == "apple" and normalise_token("▁Apple") == "Apple"
    assert normalise_token(" apple") == "apple" and normalise_token(" ") == " "
    a = pd.DataFrame({"rank": [1, 2, 3, 4], "token": ["apple", " apple", "Apple", "pear"]})
    b = pd.DataFrame({"rank": [1, 2, 3], "token": ["▁apple", "APPLE", "pear"]})
    overlap = neighbour_overlap(a, b)
    # A = {apple, Apple, pear}, B = {apple, APPLE, pear}: 2 shared of 4 distinct
    assert overlap.jaccard == pytest.approx(2 / 4)
    assert overlap.shared == ["apple", "pear"]
    row = overlap.table.set_index("token").loc["pear"]
    assert (row["rank_a"], row["rank_b"], row["in_both"]) == (4, 3, True)
    assert pd.isna(overlap.table.set_index("token").loc["APPLE", "rank_a"])


def test_projection_is_pca_of_the_word_vectors(tiny_llama):
    pairs = parse_word_groups("Fruits: apple, green\nTech: Apple, company, apple\nbreakfast")
    assert pairs == [("Fruits", "apple"), ("Fruits", "green"), ("Tech", "Apple"), ("Tech", "company"),
                     ("words", "breakfast")]
    points = project_words(tiny_llama, pairs)
    table = table_of(tiny_llama).detach().double().numpy()
    vectors = np.stack([table[tiny_llama.tokenizer(w, add_special_tokens=False)["input_ids"]].mean(axis=0)
                        for _, w in pairs])
    centred = vectors - vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)  # independent route: covariance eigenvectors
    top = eigenvectors[:, ::-1][:, :2]
    expected = centred @ top
    for axis, column in enumerate(["x", "y"]):  # PCA axes are defined up to sign
        got = points[column].to_numpy()
        sign = np.sign(got @ expected[:, axis])
        np.testing.assert_allclose(got, sign * expected[:, axis], atol=1e-6)
    np.testing.assert_allclose(points.attrs["explained"], eigenvalues[::-1][:2] / eigenvalues.sum(), atol=1e-9)
    with pytest.raises(ValueError, match="at least 3"):
        project_words(tiny_llama, ["apple", "green"])


def test_visible_marks_spaces():
    assert visible(" apple") == "␣apple" and visible("a b") == "a b" and visible("  ") == "␣␣"


@pytest.mark.embedded
def test_embedded_pair_matches_brute_force(smollm, gemma270m):
    for lm, query in ((smollm, "apple"), (smollm, "李"), (gemma270m, "Apple"), (gemma270m, "王")):
        result = nearest_tokens(lm, query, k=10)
        check_against_brute_force(lm, result.attrs["query_ids"], result)
    apple = nearest_tokens(gemma270m, "Apple", k=10)
    assert {"iPhone", " Apple"} <= set(apple["token"])  # the lecture's point, in Gemma 3 270M too
    assert len(nearest_tokens(smollm, "李").attrs["query_pieces"]) == 2  # two byte pieces in SmolLM2
    both = neighbour_overlap(nearest_tokens(smollm, "apple", k=10), nearest_tokens(gemma270m, "apple", k=10))
    assert {"apple", "Apple"} <= set(both.shared) and 0 < both.jaccard < 1


@pytest.mark.app
@pytest.mark.embedded
def test_page_runs_with_the_embedded_pair():
    app = run_page("views/weights/embeddings.py", query={"emb_query": "李", "emb_k": "8"})
    assert_clean(app)
    assert not app.error, [e.value for e in app.error]
    frames = [df.value for df in app.dataframe]
    assert len(frames) >= 4  # nearest A, B and arithmetic A, B
    assert all(len(f) == 8 for f in frames[:2])
    assert frames[1]["text"].iloc[0] == "李"  # Gemma 3 has 李 as one token: itself at rank 1
    assert any("cuts '李' into 2 tokens" in i.value for i in app.info)  # SmolLM2 splits it into bytes
    assert any(m.label == "Jaccard" for m in app.metric)
    assert any("'小' is number" in s.value for s in app.success)  # Gemma: 冷 − cold + small lands near 小
    for slot in app.session_state["_slots"]:  # the rank shown, recomputed here over the whole table
        rank = arithmetic_rank_by_hand(slot.lm, "冷", "cold", "small", "小")
        if rank is None:  # SmolLM2 has no single token for 小
            assert any("'小' is not a single token here" in c.value for c in app.caption)
        else:
            shown = [m.value for m in [*app.success, *app.warning] if "'小' is" in m.value]
            assert len(shown) == 1 and f"number **{rank:,}**" in shown[0], (rank, shown)
    app.selectbox(key="emb_piece_A_李").set_value(0).run()  # SmolLM2: use only the first byte piece of 李
    assert_clean(app)
    assert app.dataframe[0].value["token_id"].iloc[0] == 30679  # that piece (bytes E6 9D) finds itself first
    app.text_input(key="emb_query").set_value("").run()
    assert_clean(app)
    assert any("Type a token" in w.value for w in app.warning)
    app.text_input(key="emb_query").set_value("#999999999").run()
    assert_clean(app)
    assert any("does not exist" in e.value for e in app.error)
