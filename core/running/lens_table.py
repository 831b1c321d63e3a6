"""The logit lens's tables: one row per (layer, position, rank), local or remote alike, and the views of it.

Why a module of its own: core.running.lens (here) and core.remote.lens (where a remote model
runs) both turn top-k ids and probabilities into the same DataFrame, and core.remote.lens may not
import core.running.lens (which calls it for a remote model). The views the lens page draws
(lens_grid, last_position_table, first_top1_layer) read only these tables; core.running.lens
exports them all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.model.loaded import LoadedModel
from core.running.trace import Trace
from core.text.tokens import display_token


def top_k_table(lm: LoadedModel, layers, positions, ids, probs) -> pd.DataFrame:
    """Columns layer, position, rank, token, token_id, prob from layers (R,), positions (R,), ids (R, k), probs (R, k)."""
    ids, probs = np.asarray(ids), np.asarray(probs)
    rows, k = ids.shape
    names = {i: display_token(lm, int(i)) for i in np.unique(ids)}
    return pd.DataFrame({
        "layer": np.repeat(layers, k),
        "position": np.repeat(positions, k),
        "rank": np.tile(np.arange(1, k + 1), rows),
        "token": [names[i] for i in ids.ravel()],
        "token_id": ids.ravel(),
        "prob": probs.ravel(),
    })


def grid_table(lm: LoadedModel, tokens: int, result: dict) -> pd.DataFrame:
    """logit_lens's table from a remote grid's "ids" and "probs" ((L + 1) * T, k), layer-major."""
    layers, positions = np.divmod(np.arange(len(result["ids"])), tokens)
    return top_k_table(lm, layers, positions, result["ids"], result["probs"])


def trajectory_table(lm: LoadedModel, position: int, looked_up: str, target_id: int, rank, prob) -> pd.DataFrame:
    """token_trajectory's table from ranks and probabilities (L + 1,) of token `target_id` at `position`."""
    entries = len(rank)
    return pd.DataFrame({
        "layer": np.arange(entries), "relative_depth": np.arange(entries) / (entries - 1), "position": position,
        "looked_up": looked_up, "token": display_token(lm, target_id), "token_id": target_id,
        "rank": rank, "prob": prob, "top1": rank == 1,
    })


def lens_grid(table: pd.DataFrame, trace: Trace, num_layers: int) -> pd.DataFrame:
    """The top-1 rows of a lens table with the input token of each position and relative depth added."""
    top = table[table["rank"] == 1].copy()
    top["input_token"] = [trace.tokens[p] for p in top["position"]]
    top["relative_depth"] = top["layer"] / num_layers
    return top.reset_index(drop=True)


def last_position_table(table: pd.DataFrame) -> pd.DataFrame:
    """Top-k at the last position, one row per layer: columns layer, top 1 … top k ("'token' 37%")."""
    last = table[table["position"] == table["position"].max()]
    cells = last.assign(cell=[f"{t!r} {p:.0%}" for t, p in zip(last["token"], last["prob"])])
    wide = cells.pivot(index="layer", columns="rank", values="cell")
    wide.columns = [f"top {r}" for r in wide.columns]
    return wide.reset_index()


def first_top1_layer(trajectory: pd.DataFrame) -> int | None:
    """The first layer at which the target token is the top prediction (None: never)."""
    hits = trajectory.loc[trajectory["rank"] == 1, "layer"]
    return int(hits.iloc[0]) if len(hits) else None
