"""How many bytes a page brings back from NDIF, computed from a model's config alone (meta device).

Why: issue 18 bounds what each page may receive for Llama-3.1-405B (the lens page: 1 MB), and
that must hold by construction, before any job is sent. The architecture is built on the meta
device (no weights, no memory) and the same reduction the remote trace runs (and the local lens:
core.running.lens_reduce.lens_request) is applied to meta tensors of the captured shapes: the shapes
and dtypes that come out are exactly those of the values saved in the trace. Their bytes are then
measured with torch.save, as the server writes them (on zero tensors of those shapes, before
compression; zstd only makes the real transfer smaller).
"""

from __future__ import annotations

import torch

from core.loading.load import build_on_meta
from core.model.loaded import LoadedModel
from core.remote.jobs import result_bytes
from core.running.lens_reduce import BLOCK_BYTES, ROWS_PER_PASS, VOCAB_BLOCK, lens_request, never

LENS_PAGE_BUDGET = 2**20  # issue 18: the lens page brings back at most 1 MB
PAGE_BUDGET = 64 * 2**20  # and any other page at most 64 MB
LECTURE_TOKENS = 12  # the lecture's prompt, in Llama 3 tokens


def lens_result_shapes(lm: LoadedModel, tokens: int = LECTURE_TOKENS, k: int = 10, *,
                       last_only: bool = False, trajectory: bool = True) -> dict[str, torch.Tensor]:
    """Meta tensors with the shape and dtype of each value a remote lens job sends back.

    lens_request itself runs on meta tensors of the captured shapes (hidden_states[0..L], (1, T, H)
    each). last_only=False: the lens page (top-k ids and probabilities of every layer and position,
    and, with `trajectory`, one token's rank and probability at every layer); True: what
    core.remote.lens.remote_lens_last brings back (the last position only, no trajectory).
    """
    parts, layout = lm.parts, lm.parts.layout
    states = [torch.empty(1, int(tokens), layout.hidden_size, device="meta", dtype=parts.lm_head.weight.dtype)
              for _ in range(lm.num_layers + 1)]  # (1, T, H) each
    head = {"multiplier": layout.logit_multiplier, "softcap": layout.logit_softcap, "upcast": never,
            "vocab_block": VOCAB_BLOCK, "block_bytes": BLOCK_BYTES}
    grid = {"k": min(int(k), lm.vocab_size), "step": ROWS_PER_PASS, "last_only": last_only}
    follow = {"position": int(tokens) - 1, "target_id": 0} if trajectory and not last_only else None
    with torch.no_grad():
        return lens_request(states, None, norm=parts.final_norm, project_out=parts.project_out, head=parts.lm_head,
                            grid=grid, trajectory=follow, **head)


def meta_bytes(values: dict[str, torch.Tensor]) -> int:
    """torch.save bytes of `values` (meta tensors) as a lens job saves them, measured on zeros of the same shapes."""
    return result_bytes({"lens": {name: torch.zeros(value.shape, dtype=value.dtype) for name, value in values.items()}})


def llama_405b_config():
    """Llama-3.1-405B's config, written out (the hub is out of reach): 126 layers, hidden 16,384, 128 heads
    (8 key/value heads), vocabulary 128,256. Every page's bytes are sized for it (issue 18)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128_256, hidden_size=16_384, intermediate_size=53_248, num_hidden_layers=126,
                       num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131_072,
                       tie_word_embeddings=False)


def meta_model(config) -> LoadedModel:
    """A LoadedModel of `config` built on the meta device: parts, shapes and dtypes, no weights, no memory."""
    model = build_on_meta(config)
    return LoadedModel(getattr(config, "name_or_path", "") or config.model_type, None, model, None, False, "meta",
                       model.dtype, 0.0)


def lens_page_bytes(config, tokens: int = LECTURE_TOKENS, k: int = 10, *, last_only: bool = False,
                    trajectory: bool = True) -> int:
    """Bytes the lens page brings back for a model with this config (a transformers config object)."""
    return meta_bytes(lens_result_shapes(meta_model(config), tokens, k, last_only=last_only, trajectory=trajectory))
