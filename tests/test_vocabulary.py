"""core.weights.vocabulary and core.text.tokens: ids as the model sees them, lookups, overlap vs direct set arithmetic."""

import numpy as np
import pytest
import torch

from core import load_model, tokenize
from core.model.errors import ModelLoadError
from core.text.tokens import MAX_TEXT_CHARS
from core.weights.vocabulary import (MULTILINGUAL, added_tokens, embedding_row, find_token, lookup_ids, normalize_piece,
                             parse_ids, special_tokens, tokens_per_character, vocab_facts, vocab_overlap)

TEXTS = ["大家好", "the apple is green. what color is the apple?", "Great job 🎉 see you", "  two  spaces\nline"]


# ---------------------------------------------------------------- tokenize is what the model sees


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_ids_are_the_tokenizers_own(tiny_llama, text):
    assert tokenize(tiny_llama, text)["token_id"].tolist() == tiny_llama.tokenizer(text)["input_ids"]


@pytest.mark.embedded
@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_embedded_pair(smollm, gemma270m, text):
    for lm in (smollm, gemma270m):
        table = tokenize(lm, text)
        assert table["token_id"].tolist() == lm.tokenizer(text)["input_ids"]
        assert table["token"].tolist() == lm.tokenizer.convert_ids_to_tokens(lm.tokenizer(text)["input_ids"])


@pytest.mark.embedded
def test_lecture_tokenizations(smollm, gemma270m):
    gemma = tokenize(gemma270m, "大家好")
    assert gemma["token"].tolist() == ["<bos>", "大家好"]
    smol = tokenize(smollm, "大家好")  # byte-level: 好 is split into two byte pieces
    assert smol["text"].tolist() == ["大", "<E5 AE>", "<B6>", "<E5 A5>", "<BD>"]
    assert "".join(smollm.tokenizer.decode(smol["token_id"].tolist())) == "大家好"


def test_empty_and_too_long_text(tiny_llama):
    assert tokenize(tiny_llama, "")["token"].tolist() == ["<bos>"]  # only the BOS the tokenizer adds
    table = tokenize(tiny_llama, "ab " * 8000)  # 24,000 characters
    assert table["end"].max() <= MAX_TEXT_CHARS
    assert table["end"].max() >= MAX_TEXT_CHARS - 3


def test_config_only_has_no_tokenizer():
    lm = load_model("llama-3.2-3b", weights=False)
    with pytest.raises(ModelLoadError, match="config only"):
        vocab_facts(lm)


# ---------------------------------------------------------------- facts and lookups


def test_tiny_facts(tiny_llama):
    facts = vocab_facts(tiny_llama)
    assert facts["Tokens in the tokenizer"] == "320" and facts["Rows of the embedding table"] == "320"
    assert facts["Adds a begin-of-sequence token"] == "yes: <bos> (id 0)"
    assert facts["Tokenizer type"].startswith("byte-level")
    roles = special_tokens(tiny_llama).set_index("role")["id"].to_dict()
    assert roles == {"BOS": 0, "EOS": 1, "PAD": 2}


@pytest.mark.embedded
def test_embedded_facts(smollm, gemma270m):
    smol, gemma = vocab_facts(smollm), vocab_facts(gemma270m)
    assert smol["Tokens in the tokenizer"] == "49,152" and smol["Adds a begin-of-sequence token"] == "no"
    assert gemma["Tokens in the tokenizer"] == "262,144" and gemma["Adds a begin-of-sequence token"].startswith("yes: <bos>")
    added = added_tokens(gemma270m)
    unused = [t for t in gemma270m.tokenizer.added_tokens_decoder.values() if t.content.startswith("<unused")]
    assert (added["kind"] == "reserved (unused slot)").sum() == len(unused) == 6242


def test_lookup_ids(tiny_llama):
    table = lookup_ids(tiny_llama, [0, 1, 319])
    assert table["token"].tolist() == ["<bos>", "<eos>", tiny_llama.tokenizer.convert_ids_to_tokens(319)]
    with pytest.raises(ValueError, match="320 is out of range"):
        lookup_ids(tiny_llama, [5, 320])
    with pytest.raises(ValueError, match="out of range"):
        lookup_ids(tiny_llama, [-1])


def test_parse_ids_bad_input():
    assert parse_ids(" 0, 1 2;3 ") == [0, 1, 2, 3]
    for bad in ["", "   ", "apple", "1.5", "0x10"]:
        with pytest.raises(ValueError):
            parse_ids(bad)


@pytest.mark.embedded
def test_find_token(smollm, gemma270m):
    assert smollm.tokenizer.convert_ids_to_tokens(find_token(smollm, " apple")) == "Ġapple"
    assert gemma270m.tokenizer.convert_ids_to_tokens(find_token(gemma270m, " apple")) == "▁apple"
    assert find_token(smollm, "Ġapple") == find_token(smollm, " apple")
    assert find_token(gemma270m, "apple") != find_token(gemma270m, " apple")
    with pytest.raises(ValueError, match="is not one token"):
        find_token(smollm, "hello world")
    with pytest.raises(ValueError, match="Type a token"):
        find_token(smollm, "")


def test_tokens_per_character(tiny_llama):
    table = tokens_per_character(tiny_llama, {"apple": "the apple", "empty": ""}).set_index("sample")
    expected = len(tiny_llama.tokenizer("the apple", add_special_tokens=False)["input_ids"])
    assert table.loc["apple", "tokens"] == expected  # no BOS counted
    assert table.loc["apple", "tokens_per_character"] == pytest.approx(expected / 9)
    assert table.loc["empty", "tokens"] == 0 and table.loc["empty", "tokens_per_character"] == 0


@pytest.mark.embedded
def test_chinese_costs_smollm_more_tokens_than_gemma(smollm, gemma270m):
    smol = tokens_per_character(smollm, MULTILINGUAL).set_index("sample")["tokens_per_character"]
    gemma = tokens_per_character(gemma270m, MULTILINGUAL).set_index("sample")["tokens_per_character"]
    assert smol["Traditional Chinese"] > 2 * gemma["Traditional Chinese"]
    assert smol["English"] < smol["Traditional Chinese"]


# ---------------------------------------------------------------- overlap


def test_normalize_piece():
    assert normalize_piece("Ġapple", byte_level=True) == " apple"
    assert normalize_piece("å¤§", byte_level=True) == "大"
    assert normalize_piece("å®", byte_level=True) == "å®"  # half a character stays as spelled
    assert normalize_piece("▁apple", byte_level=False) == " apple"


def test_overlap_with_itself(tiny_llama, tiny_gemma):
    overlap = vocab_overlap(tiny_llama, tiny_gemma)  # the same tokenizer
    assert (overlap.only_a, overlap.only_b, overlap.jaccard) == (0, 0, 1.0)
    assert overlap.shared == len(set(tiny_llama.tokenizer.get_vocab()))


@pytest.mark.embedded
def test_overlap_matches_direct_set_computation(smollm, gemma270m):
    # GPT-2's byte <-> printable-character table, as in openai/gpt-2 encoder.py bytes_to_unicode().
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    for byte in range(256):
        if byte not in bs:
            bs.append(byte)
            cs.append(256 + len(cs) - 188)
    char_to_byte = {chr(c): b for b, c in zip(bs, cs)}

    def readable_byte_level(piece):
        try:
            return bytes(char_to_byte[ch] for ch in piece).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            return piece

    a = {readable_byte_level(p) for p in smollm.tokenizer.get_vocab()}
    b = {p.replace("▁", " ") for p in gemma270m.tokenizer.get_vocab()}
    overlap = vocab_overlap(smollm, gemma270m)
    assert overlap.shared == len(a & b)
    assert overlap.only_a == len(a - b)
    assert overlap.only_b == len(b - a)
    assert overlap.jaccard == pytest.approx(len(a & b) / len(a | b))
    shared = set(overlap.table.loc[overlap.table["where"] == "shared", "token"])
    assert " apple" in shared and "大" in shared and shared == a & b


# ---------------------------------------------------------------- embedding rows


def test_embedding_row(tiny_llama):
    weight = tiny_llama.model.model.embed_tokens.weight.detach()
    row = embedding_row(tiny_llama, 7, first=5)
    np.testing.assert_array_equal(row["values"], weight[7, :5].numpy())
    assert row["norm"] == pytest.approx(torch.linalg.norm(weight[7]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        embedding_row(tiny_llama, 10_000)


def test_embedding_row_of_config_only_model():
    lm = load_model("gemma-3-4b", weights=False)
    with pytest.raises(ValueError, match="config only"):
        embedding_row(lm, 0)
