"""Reading a shared model's tensors without changing it.

- `parameter_value`: a module's parameter as a real tensor, also when accelerate offloaded it.
- `execution_device`: where a module computes (its accelerate hook's device, else its weights').
- `embedding_table` and `inverse_norms`: the input-embedding matrix as stored, and 1 / |E[i]| for
  every row, computed once per model. `load_model` computes the norms at load, so the first
  nearest-token query pays no second pass over the table; core/weights/embeddings.py reads both.
"""

from __future__ import annotations

import threading
import weakref

import torch

from core.model.errors import ModelLoadError
from core.model.loaded import LoadedModel
from core.weights.neighbour_reduce import compute_inverse_norms  # noqa: F401 (torch only, shared with NDIF)


def parameter_value(module: torch.nn.Module, name: str = "weight") -> torch.Tensor:
    """A module's parameter as a real tensor, also when accelerate offloaded it (then it is meta on the
    module and its value lives in the hook's weights map: read from RAM or disk, the module untouched)."""
    value = getattr(module, name)
    if not value.is_meta:
        return value.detach()
    hook = getattr(module, "_hf_hook", None)
    weights_map = getattr(hook, "weights_map", None)
    if weights_map is None:
        raise ModelLoadError("The weights of this model are not loaded (they are on the meta device): "
                             "turn on 'Load the weights' in the sidebar.")
    return weights_map[name].detach()


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: its accelerate hook's execution device, else where its weights are."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")




def embedding_table(lm: LoadedModel) -> torch.Tensor:
    """The input-embedding matrix (vocab, hidden) as stored: same dtype, no copy."""
    if not lm.has_weights:
        raise ModelLoadError(f"{lm.name} was loaded from its config only: embeddings need the weights.")
    # The module's own weight, or (offloaded by accelerate) its value read from RAM/disk, module untouched.
    return parameter_value(lm.parts.embed, "weight")  # (V, H), on the table's own device


class _NormCache:
    """Inverse row norms per loaded model, computed once; an entry goes away with its model."""

    def __init__(self) -> None:
        self._inverse: weakref.WeakKeyDictionary[LoadedModel, torch.Tensor] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, lm: LoadedModel) -> torch.Tensor:
        with self._lock:  # two sessions asking at once compute it once
            inverse = self._inverse.get(lm)
            if inverse is None:
                inverse = compute_inverse_norms(embedding_table(lm))
                self._inverse[lm] = inverse
            return inverse


NORMS = _NormCache()


def inverse_norms(lm: LoadedModel) -> torch.Tensor:
    """1 / |E[i]| for every token of the model, fp32 (vocab,). Cached per model."""
    return NORMS.get(lm)
