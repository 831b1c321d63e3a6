"""On-disk cache: GGUF files converted once to safetensors snapshot folders.

Dequantizing a GGUF file and building its tokenizer takes ~25 s (SmolLM2) and
~75 s (Gemma 3 270M, mostly the 262k-token tokenizer) on 2 cores. We do it once
and save an ordinary HF snapshot folder (config.json + model.safetensors +
tokenizer files), which then loads in a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("LMSBS_CACHE_DIR") or Path.home() / ".cache" / "lm-side-by-side"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_fingerprint(path: Path) -> str:
    """Size + sha256 of the first and last MiB: cheap, and changes when the file does."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def converted_gguf_folder(gguf_path: Path) -> Path:
    return cache_dir() / "converted" / f"{gguf_path.stem}-{file_fingerprint(gguf_path)}"


def convert_gguf(gguf_path: Path, progress=None) -> Path:
    """Return a safetensors snapshot folder for `gguf_path`, converting it on first use.

    The folder is written under a temporary name and renamed at the end, so an
    interrupted conversion never leaves a half-written cache entry behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_gguf_folder(gguf_path)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(0.1, f"First start: converting {gguf_path.name} from GGUF (about a minute, once)")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        if progress:
            progress(0.4, f"Dequantizing the weights of {gguf_path.name}")
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    except Exception as error:  # unsupported architecture, truncated file, missing reader...
        from core.loading import ModelLoadError

        raise ModelLoadError(
            f"The GGUF file {gguf_path.name} could not be read: {type(error).__name__}: {str(error)[:200]}"
        ) from None
    if progress:
        progress(0.7, "Saving the converted model to the disk cache")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "snapshot"
        # The tensors are already dequantized to float32: save them as a plain model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(f"Dequantized from {gguf_path}\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    del model
    return target
