"""How many bytes a page brings back from NDIF, computed from a model's config alone (meta device).

Why: issue 18 bounds what each page may receive for Llama-3.1-405B (the lens page: 1 MB), and
that must hold by construction, before any job is sent. The architecture is built on the meta
device (no weights, no memory) and the same reduction the remote trace runs
(core.remote.reduce.lens_top_k) is applied to meta tensors of the page's shape: the shapes and
dtypes that come out are exactly those of the values saved in the trace. Their bytes are then
measured with torch.save, as the server writes them (on zero tensors of those shapes, before
compression; zstd only makes the real transfer smaller).
"""

from __future__ import annotations

import torch

from core.loading.load import build_on_meta
from core.model.loaded import LoadedModel
from core.remote.jobs import result_bytes
from core.remote.reduce import lens_top_k

LENS_PAGE_BUDGET = 2**20  # issue 18: the lens page brings back at most 1 MB
PAGE_BUDGET = 64 * 2**20  # and any other page at most 64 MB
LECTURE_TOKENS = 12  # the lecture's prompt, in Llama 3 tokens


def lens_result_shapes(lm: LoadedModel, tokens: int = LECTURE_TOKENS, k: int = 10, *,
                       last_only: bool = False) -> dict[str, torch.Tensor]:
    """Meta tensors with the shape and dtype of each value the remote lens saves.

    last_only=False: the lens page (top-k ids and probabilities at every layer and position, plus
    the trajectory of one token: its rank and probability at every layer); True: what
    core.remote.lens.remote_lens_last saves (the last position only).
    """
    parts, layout = lm.parts, lm.parts.layout
    entries = lm.num_layers + 1  # hidden_states[0..L]
    positions = 1 if last_only else int(tokens)
    head = parts.lm_head
    rows = torch.empty(entries * positions, layout.hidden_size, device="meta", dtype=head.weight.dtype)  # (R, H)
    with torch.no_grad():
        ids, probs = lens_top_k(rows, positions if parts.final_norm is not None else 0, parts.final_norm,
                                parts.project_out, head, layout.logit_multiplier, layout.logit_softcap,
                                min(int(k), lm.vocab_size))  # (R, k) each
    values = {"lens_ids": ids, "lens_probs": probs}
    if not last_only:
        values = {name: value.reshape(entries, positions, -1) for name, value in values.items()}  # (L + 1, T, k)
        values["trajectory_rank"] = torch.empty(entries, dtype=torch.int64, device="meta")  # (L + 1,)
        values["trajectory_prob"] = torch.empty(entries, dtype=torch.float32, device="meta")  # (L + 1,)
    return values


def meta_bytes(values: dict[str, torch.Tensor]) -> int:
    """torch.save bytes of `values` (meta tensors), measured on zero tensors of the same shapes and dtypes."""
    return result_bytes({name: torch.zeros(value.shape, dtype=value.dtype) for name, value in values.items()})


def lens_page_bytes(config, tokens: int = LECTURE_TOKENS, k: int = 10, *, last_only: bool = False) -> int:
    """Bytes the lens page brings back for a model with this config (a transformers config object)."""
    model = build_on_meta(config)
    lm = LoadedModel(getattr(config, "name_or_path", "") or config.model_type, None, model, None, False, "meta",
                     model.dtype, 0.0)
    return meta_bytes(lens_result_shapes(lm, tokens, k, last_only=last_only))
