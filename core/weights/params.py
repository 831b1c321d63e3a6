"""Parameter counts and the named-parameter table (lecture step 1).

Tied weights (Llama's and Gemma's LM head shares the embedding table) are one
tensor and are counted once, as `model.num_parameters()` does.
"""

from __future__ import annotations

import pandas as pd

from core.model.loaded import LoadedModel


def count_parameters(lm: LoadedModel) -> int:
    """Number of parameters, each unique tensor once (tied embeddings counted once)."""
    return sum({id(p): p.numel() for p in lm.model.parameters()}.values())


def parameter_table(lm: LoadedModel) -> pd.DataFrame:
    """One row per unique named parameter: name, shape, dtype, numel, tied_to.

    Works for config-only (meta device) models: only shapes are needed.
    `tied_to` names the first parameter a tied tensor shares storage with.
    """
    rows, seen = [], {}
    for name, param in lm.model.named_parameters(remove_duplicate=False):
        first = seen.setdefault(id(param), name)
        rows.append({
            "name": name,
            "shape": tuple(param.shape),
            "dtype": str(param.dtype).removeprefix("torch."),
            "numel": param.numel(),
            "tied_to": "" if first == name else first,
        })
    table = pd.DataFrame(rows, columns=["name", "shape", "dtype", "numel", "tied_to"])
    return table[table["tied_to"] == ""].drop(columns="tied_to").reset_index(drop=True)
