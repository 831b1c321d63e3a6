"""The vocabulary a model reads and writes (lecture step 2).

- `vocab_facts`, `special_tokens`, `added_tokens`: tokenizer size vs embedding
  rows, BOS/EOS/PAD…, added and reserved slots (Llama 3's 256, Gemma's <unusedN>).
- `lookup_ids` / `find_token`: id → token and text → id.
- `tokens_per_character`: how many tokens each model needs for the same text.
- `vocab_overlap`: which vocabulary entries two models share. Entries are
  compared as text after undoing each tokenizer's spelling of spaces: byte-level
  BPE (GPT-2, Llama 3, SmolLM2) writes every byte as a printable character (the
  space is "Ġ"), SentencePiece (Gemma) writes the space as "▁". An entry that is
  only part of a UTF-8 character keeps its raw spelling. Jaccard = shared / union.
- `embedding_row`: the row of the embedding table that is a token's vector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.model.reading import parameter_value
from core.text.tokens import BYTE_DECODER, MAX_TEXT_CHARS, display_token, require_tokenizer

RESERVED = re.compile(r"reserved|unused", re.IGNORECASE)

LECTURE_TEXTS = {
    "大家好": "大家好",
    "the apple is green…": "the apple is green. what color is the apple?",
}
MULTILINGUAL = {
    "English": "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "Traditional Chinese": "今天天氣真好，我們一起去台北的公園散步，然後喝一杯珍珠奶茶。",
    "Japanese": "今日はとても良い天気なので、友達と一緒に公園を散歩しました。",
    "Code": "def mean(values):\n    return sum(values) / len(values) if values else 0.0\n",
    "Emoji": "Great job 🎉🎉 see you soon 😀👍 ❤️ 🇹🇼",
}


# ---------------------------------------------------------------- facts


def is_byte_level(tokenizer) -> bool:
    """True for byte-level BPE (GPT-2 style "Ġ" spaces), False for SentencePiece-style ("▁") vocabularies."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.decoder is not None:
        return "ByteLevel" in str(backend.decoder)
    vocab = tokenizer.get_vocab()
    return sum(p.startswith("Ġ") for p in vocab) > sum(p.startswith("▁") for p in vocab)


def adds_bos(lm: LoadedModel) -> bool:
    tokenizer = require_tokenizer(lm)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def added_tokens(lm: LoadedModel) -> pd.DataFrame:
    """Tokens added on top of the learned vocabulary: id, token, kind (special / reserved / added)."""
    tokenizer = require_tokenizer(lm)
    special = set(tokenizer.all_special_ids)
    rows = []
    for token_id, added in sorted(tokenizer.added_tokens_decoder.items()):
        kind = "reserved (unused slot)" if RESERVED.search(added.content) else (
            "special" if added.special or token_id in special else "added")
        rows.append({"id": token_id, "token": added.content, "kind": kind})
    return pd.DataFrame(rows, columns=["id", "token", "kind"])


def special_tokens(lm: LoadedModel) -> pd.DataFrame:
    """The named special tokens: role (bos_token…), token, id."""
    tokenizer = require_tokenizer(lm)
    rows = []
    for role, token in tokenizer.special_tokens_map.items():
        for piece in token if isinstance(token, list) else [token]:
            rows.append({"role": role.removesuffix("_token").upper(), "token": str(piece),
                         "id": tokenizer.convert_tokens_to_ids(str(piece))})
    return pd.DataFrame(rows, columns=["role", "token", "id"])


def vocab_facts(lm: LoadedModel) -> dict[str, str]:
    """Ordered label -> value (strings), the same labels for every model so A and B align."""
    tokenizer = require_tokenizer(lm)
    size, rows = len(tokenizer), lm.vocab_size
    added = added_tokens(lm)
    reserved = int((added["kind"] == "reserved (unused slot)").sum())
    if rows > size:
        fit = f"{rows - size:,} embedding rows have no token (padding, kept for speed or future tokens)"
    elif rows < size:
        fit = f"{size - rows:,} tokens have no embedding row (they cannot be fed to the model)"
    else:
        fit = "one row per token"
    bos = tokenizer.bos_token
    return {
        "Tokenizer type": "byte-level BPE (spaces written Ġ)" if is_byte_level(tokenizer) else "SentencePiece-style (spaces written ▁)",
        "Tokens in the tokenizer": f"{size:,}",
        "Rows of the embedding table": f"{rows:,}",
        "Tokenizer vs embedding table": fit,
        "Added tokens (on top of the learned vocabulary)": f"{len(added):,}",
        "… of which reserved / unused slots": f"{reserved:,}",
        "… of which special": f"{int((added['kind'] == 'special').sum()):,}",
        "Adds a begin-of-sequence token": f"yes: {bos} (id {tokenizer.bos_token_id})" if adds_bos(lm) else "no",
        "End-of-sequence token": _token_with_id(tokenizer, tokenizer.eos_token),
        "Padding token": _token_with_id(tokenizer, tokenizer.pad_token),
    }


def _token_with_id(tokenizer, token) -> str:
    return "—" if token is None else f"{token} (id {tokenizer.convert_tokens_to_ids(token)})"


# ---------------------------------------------------------------- lookups


def parse_ids(text: str) -> list[int]:
    """'0, 1 2' -> [0, 1, 2]; ValueError with a plain message for anything that is not a whole number."""
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    if not parts:
        raise ValueError("Type one or more token ids, e.g. 0, 1, 2.")
    bad = [p for p in parts if not re.fullmatch(r"-?\d+", p)]
    if bad:
        raise ValueError(f"Not a token id: {', '.join(bad[:5])}. Token ids are whole numbers such as 0, 1, 2.")
    if len(parts) > 200:
        raise ValueError(f"{len(parts)} ids typed; look up at most 200 at a time.")
    return [int(p) for p in parts]


def lookup_ids(lm: LoadedModel, ids: list[int]) -> pd.DataFrame:
    """id -> vocabulary piece and readable text. ValueError names any id outside the vocabulary."""
    tokenizer = require_tokenizer(lm)
    size = len(tokenizer)
    outside = [i for i in ids if not 0 <= i < size]
    if outside:
        raise ValueError(f"{lm.name} has token ids 0 … {size - 1:,}; "
                         f"{', '.join(f'{i:,}' for i in outside[:5])} {'is' if len(outside) == 1 else 'are'} out of range.")
    return pd.DataFrame({"id": ids, "token": tokenizer.convert_ids_to_tokens(ids),
                         "text": [display_token(lm, i) for i in ids]})


def find_token(lm: LoadedModel, text: str) -> int:
    """The id of a single token typed as text: an exact vocabulary entry ("Ġapple", "▁apple"),
    else the entry that reads as `text` (" apple"), else the text if it is exactly one token."""
    tokenizer = require_tokenizer(lm)
    if not text:
        raise ValueError("Type a token, e.g. apple or ' apple' (with a leading space).")
    vocab = tokenizer.get_vocab()
    if text in vocab:
        return vocab[text]
    spelled = {True: "".join(_BYTE_ENCODER.get(b, "") for b in text.encode("utf-8")),
               False: text.replace(" ", "▁")}[is_byte_level(tokenizer)]
    if spelled in vocab:
        return vocab[spelled]
    ids = tokenizer(text[:200], add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return ids[0]
    pieces = " + ".join(repr(display_token(lm, i)) for i in ids[:8])
    raise ValueError(f"'{text[:50]}' is not one token in {lm.name}; it becomes {len(ids)} tokens: {pieces}.")


_BYTE_ENCODER = {b: ch for ch, b in BYTE_DECODER.items()}


# ---------------------------------------------------------------- tokens per character


def tokens_per_character(lm: LoadedModel, samples: dict[str, str]) -> pd.DataFrame:
    """sample, characters, tokens (text only, no BOS), tokens_per_character."""
    tokenizer = require_tokenizer(lm)
    rows = []
    for name, text in samples.items():
        text = text[:MAX_TEXT_CHARS]
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append({"sample": name, "characters": len(text), "tokens": n,
                     "tokens_per_character": n / len(text) if text else 0.0})
    return pd.DataFrame(rows, columns=["sample", "characters", "tokens", "tokens_per_character"])


# ---------------------------------------------------------------- overlap


def normalize_piece(piece: str, byte_level: bool) -> str:
    """A vocabulary entry as the text it stands for (Ġ/▁ become spaces); partial UTF-8 keeps its raw spelling."""
    if not byte_level:
        return piece.replace("▁", " ")
    if not all(ch in BYTE_DECODER for ch in piece):  # added tokens written in plain text
        return piece
    try:
        return bytes(BYTE_DECODER[ch] for ch in piece).decode("utf-8")
    except UnicodeDecodeError:
        return piece


def normalized_vocab(lm: LoadedModel) -> dict[str, int]:
    """normalized text -> id (the lowest id when two entries read the same)."""
    tokenizer = require_tokenizer(lm)
    byte_level = is_byte_level(tokenizer)
    out: dict[str, int] = {}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))  # in id order, one call
    for token_id, piece in enumerate(pieces):
        if piece is not None:
            out.setdefault(normalize_piece(piece, byte_level), token_id)
    return out


@dataclass(frozen=True)
class Overlap:
    """Shared and separate vocabulary entries of A and B (after normalising space markers)."""

    only_a: int
    only_b: int
    shared: int
    jaccard: float  # shared / (only_a + only_b + shared)
    table: pd.DataFrame  # token, where ("shared" / "only A" / "only B"), id_a, id_b

    def counts(self) -> pd.DataFrame:
        return pd.DataFrame({"where": ["only in A", "shared", "only in B"],
                             "tokens": [self.only_a, self.shared, self.only_b]})


def vocab_overlap(lm_a: LoadedModel, lm_b: LoadedModel) -> Overlap:
    a, b = normalized_vocab(lm_a), normalized_vocab(lm_b)
    shared = a.keys() & b.keys()
    only_a = [t for t in a if t not in shared]  # dicts keep id order
    only_b = [t for t in b if t not in shared]
    in_order = [t for t in a if t in shared]
    tokens = in_order + only_a + only_b
    missing = -1
    ids_a = np.array([a[t] for t in in_order + only_a] + [missing] * len(only_b))
    ids_b = np.array([b[t] for t in in_order] + [missing] * len(only_a) + [b[t] for t in only_b])
    table = pd.DataFrame({
        "token": tokens,
        "where": ["shared"] * len(in_order) + ["only A"] * len(only_a) + ["only B"] * len(only_b),
        "id_a": pd.arrays.IntegerArray(ids_a, ids_a == missing),
        "id_b": pd.arrays.IntegerArray(ids_b, ids_b == missing),
    })
    union = len(tokens)
    return Overlap(len(only_a), len(only_b), len(shared), len(shared) / union if union else 0.0, table)


def overlap_examples(overlap: Overlap, where: str, search: str = "", limit: int = 500) -> pd.DataFrame:
    """Up to `limit` entries of one group ("shared" / "only A" / "only B") containing `search`."""
    table = overlap.table[overlap.table["where"] == where]
    if search:
        table = table[table["token"].str.contains(search, case=False, regex=False)]
    table = table.head(limit).reset_index(drop=True)
    # A leading space is invisible in a table; show it as ␣ (and a newline as ↵).
    shown = table["token"].str.replace(" ", "␣", regex=False).str.replace("\n", "↵", regex=False)
    return table.assign(token=shown)


# ---------------------------------------------------------------- embedding rows


def embedding_row(lm: LoadedModel, token_id: int, first: int = 10) -> dict:
    """The token's row of the input embedding table: id, token, norm, first values.

    This is the raw table row; Gemma multiplies it by √hidden (`embed_scale`) on the way in.
    """
    if not lm.has_weights:
        raise ValueError(f"{lm.name} is loaded from its config only: its embedding table has no values.")
    weight = parameter_value(lm.parts.embed)  # (V, H); read from RAM or disk when accelerate offloaded it
    if not 0 <= token_id < weight.shape[0]:
        raise ValueError(f"{lm.name} has embedding rows 0 … {weight.shape[0] - 1:,}; {token_id:,} is out of range.")
    with torch.no_grad():
        row = weight[token_id].float().cpu().numpy()  # (H,)
    scale = getattr(lm.parts.embed, "embed_scale", None)
    has_token = lm.tokenizer is not None and token_id < len(lm.tokenizer)
    return {"id": token_id, "token": display_token(lm, token_id) if has_token else "(no token uses this row)",
            "norm": float(np.linalg.norm(row)),
            "values": row[:first], "size": int(row.size),
            "scale": float(scale) if scale is not None else 1.0}
