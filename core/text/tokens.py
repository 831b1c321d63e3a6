"""Tokenization exactly as the model sees it (lecture step 2)."""

from __future__ import annotations

import pandas as pd

from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError

MAX_TEXT_CHARS = 20_000  # longer texts are cut here; pages say so


def require_tokenizer(lm: LoadedModel):
    if lm.tokenizer is None:
        raise ModelLoadError(f"{lm.name} was loaded from its config only and has no tokenizer files.")
    return lm.tokenizer


def encode(lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids (special tokens such as BOS included, as in a forward pass) and char offsets."""
    tokenizer = require_tokenizer(lm)
    encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE writes each byte as a printable character; this inverts that map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


BYTE_DECODER = _byte_decoder()


def display_token(lm: LoadedModel, token_id: int) -> str:
    """Readable text of one token.

    Normally what the token decodes to. A token that is only part of a UTF-8
    character (大 is three bytes in SmolLM2's byte-level vocabulary) decodes to
    "\ufffd"; it is shown as its bytes instead, e.g. "<E5 A4>".
    """
    tokenizer = require_tokenizer(lm)
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text and text != "":
        return text
    piece = tokenizer.convert_ids_to_tokens(token_id) or ""
    if piece.startswith("<0x") and piece.endswith(">"):  # SentencePiece byte fallback, e.g. <0xE5>
        return piece
    if piece and all(ch in BYTE_DECODER for ch in piece):
        return "<" + " ".join(f"{BYTE_DECODER[ch]:02X}" for ch in piece) + ">"
    return piece or f"<id {token_id}>"


def tokenize(lm: LoadedModel, text: str) -> pd.DataFrame:
    """One row per token the model sees: position, token_id, token (vocabulary piece), text, start, end.

    `token` is the raw vocabulary entry (Ġ/▁ space markers kept); `text` is what it decodes to.
    """
    tokenizer = require_tokenizer(lm)
    ids, offsets = encode(lm, text[:MAX_TEXT_CHARS])
    return pd.DataFrame({
        "position": range(len(ids)),
        "token_id": ids,
        "token": tokenizer.convert_ids_to_tokens(ids),
        "text": [display_token(lm, i) for i in ids],
        "start": [o[0] for o in offsets],
        "end": [o[1] for o in offsets],
    })
