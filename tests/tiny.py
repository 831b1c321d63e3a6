"""Tiny random-weight models of the real architectures, saved as HF snapshot folders.

They go through exactly the code path of a downloaded hub model
(config.json + model.safetensors + tokenizer files in a folder).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

CORPUS = [
    "the apple is green. what color is the apple?",
    "how about you? how are you? nice to meet you",
    "I ate an apple for breakfast. The company that makes iPads and AirPods is Apple.",
    "The capital of France is Paris. king man woman queen cold small",
] * 20


def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (like Llama 3's) with <bos> at id 0, trained on a few sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _text_kwargs(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=True)


def build_tiny(kind: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**_text_kwargs(vocab_size)))
    if kind == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**_text_kwargs(vocab_size), sliding_window=4,
                                                  final_logit_softcapping=30.0, layer_types=None))
    if kind == "gemma3-vision":
        text = Gemma3TextConfig(**_text_kwargs(vocab_size + 3), sliding_window=4)
        vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, image_size=28, patch_size=14)
        config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                              boi_token_index=vocab_size, eoi_token_index=vocab_size + 1,
                              image_token_index=vocab_size + 2)
        config.tie_word_embeddings = True
        return Gemma3ForConditionalGeneration(config)
    raise ValueError(kind)


def save_tiny(kind: str, folder: Path) -> Path:
    """Save a tiny model + tokenizer as a snapshot folder and return the folder."""
    tokenizer = tiny_tokenizer()
    model = build_tiny(kind, len(tokenizer))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
