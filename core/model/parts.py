"""Where each architecture keeps its parts: the one place that knows.

Every analysis needs the same few modules of a causal LM: the token embedding,
the list of decoder layers, the final norm (plus OPT's `project_out`), and the
LM head. Transformers says most of it itself — `get_input_embeddings()`,
`get_output_embeddings()`, `base_model`, `config.get_text_config()` — and
this module asks it first. What transformers does not name is a short table:
the attribute that holds the layer list and the final norm differs between
model families (`layers` / `h`, `norm` / `ln_f` / `final_layer_norm` / `norm_f`).

It also says where each block's attention and MLP read and write
(`Parts.sub_blocks`), for the analyses that patch or decompose them (core/cause/).

It also reads the shape of the attention and the MLP from
`config.get_text_config()` (`Layout`): query heads, key/value heads (grouped-
query attention, Ainslie et al. 2023; Falcon's multi-query attention, Shazeer
2019), head dimension, MLP width, the position scheme (RoPE, Su et al. 2021,
with θ and the rotary fraction; learned absolute positions; ALiBi, Press et al.
2022), the norm type, which layers use a sliding window, and what the model
does to its logits after the head (Gemma's soft-capping, Granite's and
Cohere's scaling).
Config names differ by family (`n_head`, `ffn_dim`, `multi_query`…); the few
tables below say only what transformers' config does not.

Pages and analyses call `model_parts(lm.model)` (or `lm.parts`) and never
reach into `model.model` or branch on `model_type` themselves.

Layer convention, the one wording used everywhere in core: "layer l" means
`hidden_states[l]`, the input of block l = the output of block l − 1; 0 = the
embedding output (with GPT-2's position embeddings and Gemma's sqrt(hidden)
scaling already in it). Blocks are numbered from 0, as in `layers[l]`. The last
entry, hidden_states[L], is the output of the last block after the final norm.
So an edit of `hidden_states[l]` for l < L is a forward pre-hook on `layers[l]`
(core/model/hooks.py). In nnsight's terms, hidden_states[l] for 1 <= l < L is
`model.model.layers[l - 1].output` (its first element where a block returns a
tuple); hidden_states[L] is that output after the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.model.errors import UnsupportedArchitecture

# Wrappers between the base model and the text decoder: Gemma 3 / Llava-style multimodal models keep the
# text stack in `language_model`; OPT keeps it in `decoder` (OPTModel -> OPTDecoder).
DECODER_WRAPPERS = ("language_model", "decoder")
# The attribute holding the decoder blocks, by family: Llama/Gemma/Mistral/Qwen/Phi-3/OLMo/StableLM/Granite/
# NeoX/OPT use `layers`; GPT-2, Falcon, Bloom, GPT-J use `h`; a few use `blocks`.
LAYER_LISTS = ("layers", "h", "blocks", "block")
# The final norm applied after the last block. `norm_f`: Mamba, MPT; `final_layernorm`: Phi-1/2, Persimmon, Jamba;
# `final_norm`: RecurrentGemma; `ln_out`: RWKV; `layer_norm`: XGLM, BioGPT.
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm", "ln_out", "layer_norm")
# The attention module inside one block (Llama & co. / GPT-2 / GPT-NeoX / Falcon); none: a state-space block.
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
# The MLP inside one block (Llama & co., GPT-2, NeoX, Falcon, GPT-J: `mlp`; a few: `feed_forward`). OPT has
# no MLP module: it reads through `fc1` and writes through `fc2` (MLP_PAIRS).
MLP_NAMES = ("mlp", "feed_forward", "ffn")
MLP_PAIRS = (("fc1", "fc2"),)
# Blocks that normalise what each sub-block writes before adding it (Gemma 2/3, OLMo 2) have a
# `post_feedforward_layernorm`; their `post_attention_layernorm` then normalises the attention's output
# (in Llama & co. the same name is the norm *before* the MLP, which is why it cannot be the signal).
POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")
# Learned absolute position tables: GPT-2 `wpe`, OPT `embed_positions`, BERT-style `position_embeddings`.
POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
# MLP width by config name, first present wins: Llama-style, GPT-2, OPT, Falcon. GPT-2's n_inner=None
# (and a missing name) means the original Transformer's 4 × hidden.
MLP_WIDTH_NAMES = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size")
# Families that always use ALiBi without a config flag (Falcon says so with `alibi=True`).
ALIBI_FAMILIES = ("bloom", "mpt")
# Families whose `output_hidden_states` tuple holds the block OUTPUTS (then the normed last one), with no
# embedding entry: Mamba's hidden_states[0] is block 0's output, not its input (transformers 5.23).
BLOCK_OUTPUT_STATES = ("mamba", "mamba2", "falcon_mamba")


@dataclass(frozen=True)
class Layout:
    """The numbers that describe one decoder's attention and MLP, read from the config."""

    hidden_size: int
    num_heads: int  # query heads; 0 for a model without attention (state-space)
    num_kv_heads: int  # key/value heads (== num_heads: multi-head; 1: multi-query; between: grouped-query)
    head_dim: int
    mlp_width: int | None
    positions: str  # "rope", "learned", "alibi" or "none"
    rope_theta: float | dict[str, float] | None  # one θ, or θ per layer type (Gemma 3: local/global)
    rotary_fraction: float  # share of each head's dimensions that RoPE rotates (GPT-NeoX, StableLM: 0.25)
    norm: str  # "RMSNorm", "LayerNorm" or the module's own class name
    layer_kinds: tuple[str, ...]  # "sliding" or "global", one per layer
    sliding_window: int | None
    logit_softcap: float | None  # Gemma 2/3: logits = cap * tanh(logits / cap)
    logit_multiplier: float | None  # logits = head(x) * this: Granite 1 / logits_scaling, Cohere logit_scale
    residual_multiplier: float | None = None  # Granite: h + residual_multiplier * sub-block output
    post_norm: bool = False  # OPT-350m: the residual stream itself is normalised after every block
    states_skip_embedding: bool = False  # BLOCK_OUTPUT_STATES: Hugging Face's hidden_states start after block 0

    @property
    def has_attention(self) -> bool:
        return self.num_heads > 0


@dataclass(frozen=True, eq=False)
class Parts:
    """The modules of one causal LM, by role. Read-only views into the shared model."""

    decoder: torch.nn.Module  # the text stack (holds embeddings, layers, final norm)
    embed: torch.nn.Module  # token embedding: ids -> vectors (Gemma's scales by sqrt(hidden) itself)
    layers: torch.nn.ModuleList  # decoder blocks in order; layers[l] reads hidden_states[l]
    final_norm: torch.nn.Module | None  # applied to the last block's output before the head
    project_out: torch.nn.Module | None  # OPT-350m: hidden -> word_embed_proj_dim after the final norm
    lm_head: torch.nn.Module  # vectors -> vocabulary scores
    layout: Layout

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def tied(self) -> bool:
        """The LM head is the embedding table itself (one tensor), as the weights really are."""
        return getattr(self.lm_head, "weight", None) is getattr(self.embed, "weight", 0)

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model does to the head's output before returning logits: Granite's division, Gemma's cap."""
        if self.layout.logit_multiplier is not None:
            logits = logits * self.layout.logit_multiplier
        if self.layout.logit_softcap:
            logits = torch.tanh(logits / self.layout.logit_softcap) * self.layout.logit_softcap
        return logits

    def attention(self, layer: int) -> torch.nn.Module | None:
        """The attention module of block `layer`, or None (e.g. a state-space block)."""
        return _first_attr(self.layers[layer], ATTENTION_NAMES)

    def sub_blocks(self, layer: int) -> SubBlocks:
        """Where block `layer`'s attention and MLP read and write (UnsupportedArchitecture when it has none)."""
        block = self.layers[layer]
        attn = self.attention(layer)
        mlp = _first_attr(block, MLP_NAMES)
        mlp_reads = mlp_writes = mlp
        if mlp is None:
            pair = next(((getattr(block, a), getattr(block, b)) for a, b in MLP_PAIRS
                         if isinstance(getattr(block, a, None), torch.nn.Module)), None)
            mlp_reads, mlp_writes = pair or (None, None)
        if attn is None or mlp_reads is None:
            raise UnsupportedArchitecture(f"{type(block).__name__} has no separate attention and MLP "
                                          "sub-blocks, so what each of them writes cannot be shown.")
        attn_writes = attn
        if isinstance(getattr(block, POST_NORMS[1], None), torch.nn.Module):
            attn_writes, mlp_writes = (getattr(block, name) for name in POST_NORMS)
        return SubBlocks(attn_reads=attn, attn_writes=attn_writes, mlp_reads=mlp_reads, mlp_writes=mlp_writes,
                         scale=self.layout.residual_multiplier or 1.0)

    def finish(self, hidden: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """What the model does between the last block and the head: final norm, then OPT's project_out.

        normed=True: the final norm is already applied (the trace's last entry), only project_out remains.
        """
        if self.final_norm is not None and not normed:
            hidden = self.final_norm(hidden)
        if self.project_out is not None:
            hidden = self.project_out(hidden)
        return hidden


@dataclass(frozen=True, eq=False)
class SubBlocks:
    """The attention and MLP sub-blocks of one decoder block: the module each reads through, and the module
    whose output is what it adds to the residual stream (after any norm the block applies to it).

    For most families each sub-block is one module (reads == writes). Gemma 2/3 and OLMo 2 write through
    their post-attention / post-feedforward norms; OPT's MLP reads through `fc1` and writes through `fc2`.
    Granite scales both writes by `scale` before adding them. Parallel blocks (GPT-J, NeoX, Falcon, Cohere)
    read the same residual in both sub-blocks and add both writes at once; the modules are the same roles.
    """

    attn_reads: torch.nn.Module  # its first input is what attention reads (already normed)
    attn_writes: torch.nn.Module  # its output (first element of a tuple) is what attention adds
    mlp_reads: torch.nn.Module
    mlp_writes: torch.nn.Module
    scale: float  # the residual stream gains scale * output of *_writes


def _first_attr(module: torch.nn.Module, names: tuple[str, ...]):
    for name in names:
        found = getattr(module, name, None)
        if isinstance(found, torch.nn.Module):
            return found
    return None


def text_decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The module that owns the token embedding and the layer list (base model, unwrapped)."""
    decoder = getattr(model, "base_model", model)
    for _ in range(3):  # at most a couple of wrappers deep (multimodal -> language_model)
        inner = _first_attr(decoder, DECODER_WRAPPERS)
        if inner is None or _first_attr(decoder, LAYER_LISTS) is not None:
            break
        decoder = inner
    return decoder


def model_parts(model: torch.nn.Module) -> Parts:
    """Find the parts of `model` (any *ForCausalLM / *LMHeadModel / Gemma 3 ForConditionalGeneration)."""
    name = type(model).__name__
    decoder = text_decoder(model)
    layers = _first_attr(decoder, LAYER_LISTS)
    if not isinstance(layers, torch.nn.ModuleList):
        raise UnsupportedArchitecture(f"{name}: cannot find its list of decoder layers, so layer-by-layer views "
                                      "are not available for this architecture.")
    embed = model.get_input_embeddings()
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise UnsupportedArchitecture(f"{name} has no LM head: it does not predict next tokens.")
    final_norm = _first_attr(decoder, FINAL_NORMS)
    return Parts(decoder=decoder, embed=embed, layers=layers, final_norm=final_norm,
                 project_out=getattr(decoder, "project_out", None), lm_head=lm_head,
                 layout=read_layout(model.config.get_text_config(), decoder, layers, final_norm))


# ---------------------------------------------------------------- the config, read once


def _num(config, name: str):
    value = getattr(config, name, None)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def kv_heads(config, num_heads: int) -> int:
    """Key/value heads. Falcon-7B's `multi_query` means one shared head unless it uses the new (40B) layout,
    whose count is `num_kv_heads`; everyone else says `num_key_value_heads` (absent: one per query head)."""
    if getattr(config, "multi_query", False) and not getattr(config, "new_decoder_architecture", False):
        return 1
    for name in ("num_key_value_heads", "num_kv_heads"):
        if _num(config, name):
            return int(getattr(config, name))
    return num_heads


def rope_of(config) -> tuple[float | dict[str, float] | None, float]:
    """(θ, rotary fraction) from transformers 5's `rope_parameters` (or the older rope_theta / rotary_pct)."""
    params = getattr(config, "rope_parameters", None) or {}
    if params and all(isinstance(v, dict) for v in params.values()):  # per layer type (Gemma 3)
        theta = {kind: p.get("rope_theta") for kind, p in params.items()}
        return theta, float(next(iter(params.values())).get("partial_rotary_factor", 1.0))
    theta = params.get("rope_theta", _num(config, "rope_theta"))
    fraction = params.get("partial_rotary_factor", _num(config, "partial_rotary_factor") or _num(config, "rotary_pct"))
    return theta, float(fraction or 1.0)


def position_scheme(config, decoder: torch.nn.Module, rope_theta) -> str:
    """'alibi', 'rope', 'learned' or 'none'. ALiBi first: Falcon's config carries rope_parameters either way."""
    if getattr(config, "alibi", False) or getattr(config, "model_type", "") in ALIBI_FAMILIES:
        return "alibi"
    if _first_attr(decoder, POSITION_TABLES) is not None:
        return "learned"
    if rope_theta is not None:
        return "rope"
    return "none"


def norm_kind(module: torch.nn.Module | None) -> str:
    name = type(module).__name__ if module is not None else "—"
    return "RMSNorm" if "RMSNorm" in name else "LayerNorm" if "LayerNorm" in name else name


def layer_kinds(config, num_layers: int) -> tuple[str, ...]:
    """'sliding' / 'global' per layer: `layer_types` when the config lists them (Gemma 2/3, Qwen2/3); else a
    `sliding_window` on every layer (Mistral, Phi-3), unless the config turns it off (`use_sliding_window`)."""
    types = getattr(config, "layer_types", None)
    if types:
        return tuple("sliding" if "sliding" in kind else "global" for kind in types)
    window = _num(config, "sliding_window")
    sliding = window is not None and getattr(config, "use_sliding_window", True)
    return ("sliding" if sliding else "global",) * num_layers


def logit_multiplier(config) -> float | None:
    """The factor the model applies to its head's output, or None. Granite divides by `logits_scaling`;
    Cohere multiplies by `logit_scale`."""
    factor = 1.0 / (_num(config, "logits_scaling") or 1.0) * (_num(config, "logit_scale") or 1.0)
    return None if factor == 1.0 else factor


def read_layout(config, decoder: torch.nn.Module, layers: torch.nn.ModuleList,
                final_norm: torch.nn.Module | None) -> Layout:
    hidden = int(config.hidden_size)
    # Every layer must attend: a hybrid (some state-space layers) has no full (layers, heads, T, T) picture.
    has_attention = all(_first_attr(layer, ATTENTION_NAMES) is not None for layer in layers)
    heads = int(_num(config, "num_attention_heads") or 0) if has_attention else 0
    head_dim = _num(config, "head_dim") or (hidden // heads if heads else 0)
    width = None  # a state-space model's intermediate_size is its mixer's width, not an MLP's
    if has_attention:
        width = next((int(getattr(config, n)) for n in MLP_WIDTH_NAMES if _num(config, n)), 4 * hidden)
    theta, fraction = rope_of(config)
    if theta is None and _num(config, "rotary_dim") and head_dim:  # GPT-J, CodeGen: fixed base 10,000
        theta, fraction = 10_000.0, _num(config, "rotary_dim") / head_dim
    positions = position_scheme(config, decoder, theta) if has_attention else "none"
    # OPT-350m has no final norm (post-norm blocks): the norm type is then the blocks' own.
    norm = final_norm or next((m for m in layers[0].modules() if "norm" in type(m).__name__.lower()), None)
    kinds = layer_kinds(config, len(layers))
    return Layout(
        hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads(config, heads) if heads else 0,
        head_dim=int(head_dim), mlp_width=width, positions=positions,
        rope_theta=theta if positions == "rope" else None, rotary_fraction=fraction if positions == "rope" else 0.0,
        norm=norm_kind(norm), layer_kinds=kinds,
        sliding_window=_num(config, "sliding_window") if "sliding" in kinds else None,
        logit_softcap=_num(config, "final_logit_softcapping"), logit_multiplier=logit_multiplier(config),
        residual_multiplier=_num(config, "residual_multiplier"),
        post_norm=getattr(config, "do_layer_norm_before", True) is False,
        states_skip_embedding=getattr(config, "model_type", "") in BLOCK_OUTPUT_STATES,
    )
