"""On-disk cache: GGUF files converted once to safetensors snapshot folders.

Dequantizing a GGUF file and building its tokenizer takes ~25 s (SmolLM2) and
~75 s (Gemma 3 270M, mostly the 262k-token tokenizer) on 2 cores. We do it once
and save an ordinary HF snapshot folder (config.json + model.safetensors +
tokenizer files), which then loads in a few seconds.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
from pathlib import Path

from core.model.errors import ModelLoadError
from core.loading.placement import GIB, MEMORY_HEADROOM, free_ram_bytes
from core.loading.sources import cache_dir

FLOAT32_BYTES = 4


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


def gguf_parameter_count(gguf_path: Path) -> int:
    """Number of weights in a GGUF file, from its header's tensor shapes only (no tensor data read).

    The GGUF header (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) is: magic, version,
    tensor count, metadata count, the metadata key/values, then per tensor its name, dims, type and
    offset. gguf's own GGUFReader parses every metadata array element into NumPy (about 20 s for a
    262k-token vocabulary); here arrays of fixed-size values are skipped by seeking, and only the
    tensor dims are read.
    """
    from gguf.constants import GGUF_MAGIC, GGUFValueType

    fixed = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1, GGUFValueType.UINT16: 2,
             GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
             GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}

    with open(gguf_path, "rb") as handle:
        def read(fmt: str):
            return struct.unpack("<" + fmt, handle.read(struct.calcsize("<" + fmt)))[0]

        def skip_value(kind: int) -> None:
            kind = GGUFValueType(kind)
            if kind in fixed:
                handle.seek(fixed[kind], 1)
            elif kind == GGUFValueType.STRING:
                handle.seek(read("Q"), 1)
            else:  # ARRAY: element type, count, elements
                item, count = read("I"), read("Q")
                if GGUFValueType(item) in fixed:
                    handle.seek(fixed[GGUFValueType(item)] * count, 1)
                else:
                    for _ in range(count):
                        skip_value(item)

        if read("I") != GGUF_MAGIC:
            raise ValueError(f"{gguf_path.name} is not a GGUF file")
        read("I")  # version
        tensors, metadata = read("Q"), read("Q")
        for _ in range(metadata):
            handle.seek(read("Q"), 1)  # key
            skip_value(read("I"))
        total = 0
        for _ in range(tensors):
            handle.seek(read("Q"), 1)  # name
            dims = [read("Q") for _ in range(read("I"))]
            read("I"), read("Q")  # type, offset
            count = 1
            for d in dims:
                count *= d
            total += count
    return total


def check_gguf_fits(gguf_path: Path, available_bytes: int | None = None) -> int:
    """Refuse, before dequantizing, a GGUF file whose float32 weights would not fit in free RAM.

    Conversion dequantizes every tensor to float32 in memory (then saves safetensors), so it
    needs about 4 bytes per weight. Returns that estimate.
    """
    try:
        needed = gguf_parameter_count(gguf_path) * FLOAT32_BYTES
    except (ValueError, struct.error, OSError) as error:
        raise ModelLoadError(f"The GGUF file {gguf_path.name} could not be read: {error}") from None
    free = available_bytes if available_bytes is not None else free_ram_bytes()
    if needed * MEMORY_HEADROOM > free:
        raise ModelLoadError(
            f"{gguf_path.name} is converted once to float32 before use and needs about {needed / GIB:.1f} GiB "
            f"of RAM for that, but only {free / GIB:.1f} GiB is free. Use the model's safetensors "
            "release (a hub id or folder) instead: those can be offloaded to disk."
        )
    return needed


def convert_gguf(gguf_path: Path, progress=None, available_bytes: int | None = None) -> Path:
    """Return a safetensors snapshot folder for `gguf_path`, converting it on first use.

    The folder is written under a temporary name and renamed at the end, so an
    interrupted conversion never leaves a half-written cache entry behind. The fit
    check runs on the GGUF header before anything is dequantized.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_gguf_folder(gguf_path)
    if (target / "config.json").exists():
        return target
    check_gguf_fits(gguf_path, available_bytes)
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
