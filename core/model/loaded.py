"""`LoadedModel`: a loaded model (or only its architecture) and what the analyses read from it.

Built by core/loading/load.py; every analysis takes one. It lives apart from loading so that parts,
hooks and the analyses can name the type without importing the code that loads models.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from core.model.parts import model_parts


@dataclass(eq=False)
class LoadedModel:
    """A loaded model and everything the analyses need to read it.

    Treat it as read-only: it is shared between pages and browser sessions.
    `lock` serialises forward passes so concurrent sessions never interleave.
    """

    name: str  # what the user picked (preset, repo id, path)
    source: object  # core.loading.sources.Source: where it came from (the model layer never imports loading)
    model: torch.nn.Module
    tokenizer: object | None  # None for config-only models without tokenizer files
    has_weights: bool
    device: str
    dtype: torch.dtype
    load_seconds: float
    dequantized_from_gguf: bool = False
    plan: object = None  # core.loading.placement.Plan: where the weights went (None: all on `device`)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _parts: object = field(default=None, repr=False, init=False)

    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def is_multimodal(self) -> bool:
        return hasattr(self.model.config, "vision_config")

    @property
    def parts(self):
        """Where this architecture keeps its embedding, layers, final norm and head (core/model/parts.py)."""
        if self._parts is None:  # found once; the model never changes
            self._parts = model_parts(self.model)
        return self._parts

    @property
    def decoder(self) -> torch.nn.Module:
        """The text transformer (embeddings, layers, final norm); under `language_model` for Gemma 3 4B."""
        return self.parts.decoder

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.parts.lm_head

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        """Query heads per layer; 0 for a model without attention (e.g. a state-space model)."""
        return self.parts.layout.num_heads

    @property
    def num_kv_heads(self) -> int:
        return self.parts.layout.num_kv_heads  # Falcon's multi_query, GQA's num_key_value_heads (core/model/parts.py)

    @property
    def hidden_size(self) -> int:
        return self.parts.layout.hidden_size

    @property
    def head_dim(self) -> int:
        return self.parts.layout.head_dim

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    @property
    def weight_bytes(self) -> int:
        unique = {id(p): p for p in self.model.parameters()}
        return sum(p.numel() * p.element_size() for p in unique.values())
