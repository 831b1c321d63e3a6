"""Shared fixtures: tiny snapshot folders (fast tier) and the embedded GGUF pair.

They are pinned to the CPU: the fast and embedded tiers compare with CPU numbers; tests/test_gpu.py
loads its own copies on cuda where a GPU exists.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "dashboard"))  # as `streamlit run dashboard/Home.py` does

from tests.tiny import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Snapshot folders of a tiny random Llama, Gemma 3 (text) and Gemma 3 with a vision tower."""
    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny(kind, root / kind) for kind in ("llama", "gemma3", "gemma3-vision")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_folders):
    from core import load_model

    return load_model(str(tiny_folders["llama"]), device="cpu")


@pytest.fixture(scope="session")
def tiny_gemma(tiny_folders):
    from core import load_model

    return load_model(str(tiny_folders["gemma3"]), device="cpu")


@pytest.fixture(scope="session")
def tiny_gemma_vision(tiny_folders):
    from core import load_model

    return load_model(str(tiny_folders["gemma3-vision"]), device="cpu")


@pytest.fixture(scope="session")
def smollm():
    from core import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma270m():
    from core import load_model

    return load_model("gemma-3-270m", device="cpu")
