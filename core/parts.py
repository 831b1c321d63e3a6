"""Where each architecture keeps its parts: the one place that knows.

Every analysis needs the same few modules of a causal LM: the token embedding,
the list of decoder layers, the final norm (plus OPT's `project_out`), and the
LM head. Transformers says most of it itself — `get_input_embeddings()`,
`get_output_embeddings()`, `base_model`, `config.get_text_config()` — and
this module asks it first. What transformers does not name is a short table:
the attribute that holds the layer list and the final norm differs between
model families (`layers` / `h`, `norm` / `ln_f` / `final_layer_norm` / `norm_f`).

Pages and analyses call `model_parts(lm.model)` (or `lm.parts`) and never
reach into `model.model` or branch on `model_type` themselves.

Layer convention (Hugging Face's `hidden_states`): entry l is the *input* of
decoder layer l for 0 <= l < L (l = 0 is the embedding output, with GPT-2's
position embeddings and Gemma's sqrt(hidden) scaling already in it), and the
last entry L is the output of the last layer after the final norm. So an edit
of `hidden_states[l]` for l < L is a forward pre-hook on `layers[l]`
(core/hooks.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Wrappers between the base model and the text decoder: Gemma 3 / Llava-style multimodal models keep the
# text stack in `language_model`; OPT keeps it in `decoder` (OPTModel -> OPTDecoder).
DECODER_WRAPPERS = ("language_model", "decoder")
# The attribute holding the decoder blocks, by family: Llama/Gemma/Mistral/Qwen/Phi-3/OLMo/StableLM/Granite/
# NeoX/OPT use `layers`; GPT-2, Falcon, Bloom, GPT-J use `h`; a few use `blocks`.
LAYER_LISTS = ("layers", "h", "blocks", "block")
# The final norm applied after the last block. `norm_f`: Mamba; `final_layernorm`: Phi-1/2, Persimmon.
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")
# Attention module inside one block, and its output projection (for per-head views).
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer")


class UnsupportedArchitecture(RuntimeError):
    """A part the dashboard needs is missing from this architecture. The message is written for the user."""


@dataclass(frozen=True, eq=False)
class Parts:
    """The modules of one causal LM, by role. Read-only views into the shared model."""

    decoder: torch.nn.Module  # the text stack (holds embeddings, layers, final norm)
    embed: torch.nn.Module  # token embedding: ids -> vectors (Gemma's scales by sqrt(hidden) itself)
    layers: torch.nn.ModuleList  # decoder blocks in order; layers[l] reads hidden_states[l]
    final_norm: torch.nn.Module | None  # applied to the last block's output before the head
    project_out: torch.nn.Module | None  # OPT-350m: hidden -> word_embed_proj_dim after the final norm
    lm_head: torch.nn.Module  # vectors -> vocabulary scores

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def attention(self, layer: int) -> torch.nn.Module | None:
        """The attention module of block `layer`, or None (e.g. a state-space block)."""
        return _first_attr(self.layers[layer], ATTENTION_NAMES)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the model does between the last block and the head: final norm, then OPT's project_out."""
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if self.project_out is not None:
            hidden = self.project_out(hidden)
        return hidden


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
    return Parts(decoder=decoder, embed=embed, layers=layers, final_norm=_first_attr(decoder, FINAL_NORMS),
                 project_out=getattr(decoder, "project_out", None), lm_head=lm_head)
