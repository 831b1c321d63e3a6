"""Tiny random-weight models of the real architectures, saved as HF snapshot folders.

They go through exactly the code path of a downloaded hub model
(config.json + model.safetensors + tokenizer files in a folder). Besides
Llama and Gemma 3 (text, and with a vision tower), `ARCHITECTURES` lists one
tiny model of each family the README promises (Mistral, Qwen2/3, Phi-3,
OLMo-2, Gemma 2, StableLM, Granite, Cohere, GPT-2, GPT-J, GPT-NeoX, OPT,
Falcon), and
`UNREADABLE` a state-space model without attention (Mamba).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
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


def _special_ids() -> dict:
    return dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)


def _other_kwargs(vocab_size: int) -> dict[str, tuple[str, dict]]:
    """kind -> (model_type, config kwargs) of every other architecture the dashboard is tested on.

    Each mirrors what makes its family different (parameter names, position scheme, norms,
    head layout), at hidden size 32 so the whole set builds in well under a second each.
    """
    text = _text_kwargs(vocab_size)
    no_head_dim = {k: v for k, v in text.items() if k != "head_dim"}  # these derive it: hidden // heads
    return {
        "mistral": ("mistral", {**text, "sliding_window": 4}),  # every layer sliding (window 4)
        "qwen2": ("qwen2", {**no_head_dim, "tie_word_embeddings": False}),
        "qwen3": ("qwen3", text),  # q/k norms inside attention
        "phi3": ("phi3", {**no_head_dim, "tie_word_embeddings": False}),  # fused qkv_proj and gate_up_proj
        "olmo2": ("olmo2", {**no_head_dim, "tie_word_embeddings": False}),  # norms after attention/MLP
        "gemma2": ("gemma2", {**text, "sliding_window": 4, "final_logit_softcapping": 30.0,
                              "attn_logit_softcapping": 50.0, "query_pre_attn_scalar": 8}),
        "stablelm": ("stablelm", {**no_head_dim, "tie_word_embeddings": False}),  # LayerNorm, 25 % rotary
        "granite": ("granite", {**no_head_dim, "embedding_multiplier": 2.0, "logits_scaling": 4.0,
                                "residual_multiplier": 0.5, "attention_multiplier": 0.2}),
        "cohere": ("cohere", {**no_head_dim, "logit_scale": 0.25}),  # parallel block, logits multiplied
        "gptj": ("gptj", dict(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=4, rotary_dim=4, n_positions=256,
                              tie_word_embeddings=False, **_special_ids())),  # RoPE on 4 of 8 dims, parallel block
        "gpt2": ("gpt2", dict(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=4, n_positions=256,
                              **_special_ids())),  # learned absolute positions, Conv1D weights
        "gpt-neox": ("gpt_neox", dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256,
                                      tie_word_embeddings=False, **_special_ids())),
        # OPT-350m's layout: word vectors are 16 wide, projected in/out of the 32-wide stack, and
        # post-norm blocks leave no final norm.
        "opt": ("opt", dict(vocab_size=vocab_size, hidden_size=32, word_embed_proj_dim=16, ffn_dim=64,
                            num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256,
                            do_layer_norm_before=False, **_special_ids())),
        "falcon": ("falcon", dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True,
                                  ffn_hidden_size=64, **_special_ids())),  # Falcon-40B/180B layout
        "falcon-alibi": ("falcon", dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3,
                                        num_attention_heads=4, multi_query=True, alibi=True,
                                        parallel_attn=True, **_special_ids())),  # Falcon-RW: ALiBi, 1 KV head
        # A state-space model: no attention at all (pages that need attention must say so).
        "mamba": ("mamba", dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, state_size=4,
                                expand=2, conv_kernel=4, **_special_ids())),
    }


ARCHITECTURES = ("llama", "gemma3", "gemma3-vision", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma2",
                 "stablelm", "granite", "cohere", "gpt2", "gptj", "gpt-neox", "opt", "falcon",
                 "falcon-alibi")  # all readable
UNREADABLE = ("mamba",)  # builds and runs, but has no attention weights


def build_tiny(kind: str, vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    other = _other_kwargs(vocab_size)
    if kind in other:
        model_type, kwargs = other[kind]
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs),
                                                attn_implementation="eager")
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


def save_remote_code_config(folder: Path) -> Path:
    """A folder like a hub repo whose architecture lives in its own Python files (trust_remote_code)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "lmsbs_custom_lm", "architectures": ["CustomForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                           "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"},
              "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 320}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
