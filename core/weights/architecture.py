"""Where a model's parameters live, and bounded views of their values (lecture step 1).

- `component_breakdown`: unique parameter counts grouped by role (embedding
  table, attention q/k/v/o, MLP gate/up/down, norms, vision tower, projector,
  untied LM head). Built on `parameter_table`, so it sums to `count_parameters`
  and works for config-only models on the meta device.
- `architecture_facts` (core/weights/card.py, re-exported here): the summary a
  lecturer reads off a config (heads, KV heads and the grouped-query-attention
  group size, activation, norm type, position scheme, sliding-window pattern).
- `aligned_layer`: one decoder layer of A next to one of B, tensors matched by
  role (q_proj ↔ q_proj …). Shapes follow PyTorch's nn.Linear convention
  (out, in): the right-hand number is the input size.
- `weight_view`: a chosen tensor as the lecture shows it (top-left N×N block)
  plus a strided sample of the whole matrix and a value histogram. Work is
  bounded: the picture reads at most MAX_SIDE² values and the statistics at
  most STATS_SAMPLE values, so a 262k-row embedding table costs the same as a
  small matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.model.loaded import LoadedModel
from core.weights.params import count_parameters, parameter_table
from core.model.reading import parameter_value
from core.weights.card import architecture_facts, gqa_explanation, layer_pattern  # noqa: F401  (re-exported for pages)
from core.weights.card import PROJECTOR_PREFIXES, VISION_PREFIXES

MAX_SIDE = 128  # the downsampled picture of a whole matrix is at most MAX_SIDE x MAX_SIDE cells
MAX_BLOCK = 400  # largest top-left block a user may ask for
STATS_SAMPLE = 2_000_000  # tensors larger than this get statistics from a fixed random sample
HIST_BINS = 60

LAYER_INDEX = re.compile(r"\.(layers|h|blocks|layer)\.(\d+)\.")

# (component, pattern on the name inside a layer/model). First match wins, so fused
# projections come before their parts. Covers Llama/Gemma/Qwen/Mistral naming and GPT-2/NeoX.
ROLE_PATTERNS = [
    ("State-space mixer", r"\.mixer\."),  # Mamba's block in place of attention (its out_proj is not attention's)
    ("Word-vector projection", r"project_(in|out)\."),  # OPT-350m: word vectors narrower than the layers
    ("Attention qkv (fused)", r"(qkv_proj|c_attn|query_key_value|Wqkv)\."),
    ("Attention q", r"(q_proj|\.query|\.wq)\."),
    ("Attention k", r"(k_proj|\.key|\.wk)\."),
    ("Attention v", r"(v_proj|\.value|\.wv)\."),
    ("Norms", r"(norm|\bln_\w*|layernorm)"),  # ln_1, ln_f (GPT-2), ln_attn / ln_mlp (Falcon 40B)
    ("Attention o", r"(o_proj|out_proj|attn\.c_proj|attention\.dense|\.wo)\."),
    ("MLP gate+up (fused)", r"gate_up_proj\."),
    ("MLP gate", r"(gate_proj|\.w1)\."),
    ("MLP up", r"(up_proj|c_fc|fc1|fc_in|dense_h_to_4h|\.w3)\."),  # fc_in: GPT-J
    ("MLP down", r"(down_proj|mlp\.c_proj|fc2|fc_out|dense_4h_to_h|\.w2)\."),
    ("Position embedding", r"(wpe|position_embeddings|embed_positions)\."),
    ("Embedding table", r"(embed_tokens|wte|word_embeddings|embed_in|embeddings)\."),
    ("LM head (untied)", r"^(lm_head|embed_out)\."),
]
COMPONENT_ORDER = [
    "Embedding table", "Position embedding", "Attention q", "Attention k", "Attention v", "Attention qkv (fused)",
    "Attention o", "MLP gate", "MLP up", "MLP gate+up (fused)", "MLP down", "State-space mixer",
    "Word-vector projection", "Norms", "LM head (untied)",
    "Vision tower", "Projector", "Other",
]
COMPONENT_HELP = {
    "Embedding table": "one row of numbers per vocabulary token",
    "Attention q": "query projection: what each token is looking for",
    "Attention k": "key projection: what each token offers to be found by",
    "Attention v": "value projection: what each token passes on when looked at",
    "Attention o": "output projection: mixes the heads back into the hidden size",
    "MLP gate": "feed-forward gate (decides how much of each hidden unit passes)",
    "MLP up": "feed-forward expansion to the larger FFN size",
    "MLP down": "feed-forward projection back to the hidden size",
    "Norms": "RMSNorm/LayerNorm scales: one number per hidden unit",
    "Position embedding": "one learned vector per position, added to the token's vector",
    "State-space mixer": "the selective state-space block that mixes tokens in place of attention (Mamba)",
    "Word-vector projection": "maps the narrower word vectors into the layers' width and back (OPT-350m)",
    "LM head (untied)": "separate output matrix that turns the last hidden state into next-token scores",
    "Vision tower": "the image encoder (it lets the model see pictures)",
    "Projector": "maps image features into the text model's hidden size",
}


# ---------------------------------------------------------------- roles and components


def component_of(name: str) -> str:
    """The component a named parameter belongs to (see ROLE_PATTERNS)."""
    if name.startswith(VISION_PREFIXES) or ".vision_tower." in name or "vision_model." in name:
        return "Vision tower"
    if name.startswith(PROJECTOR_PREFIXES) or "multi_modal_projector." in name:
        return "Projector"
    for component, pattern in ROLE_PATTERNS:
        if re.search(pattern, name):
            return component
    return "Other"


def layer_of(name: str) -> int | None:
    match = LAYER_INDEX.search(name)
    return int(match.group(2)) if match else None


def is_text(name: str) -> bool:
    return component_of(name) not in ("Vision tower", "Projector")


def components(lm: LoadedModel, names) -> list[str]:
    """component_of each name, except the embedding table and an untied LM head: those are found by
    identity (core/model/parts.py), whatever the family calls them (embed_tokens, wte, embed_in, embeddings…)."""
    first_name = {}
    for name, param in lm.model.named_parameters():  # tied tensors: the first name, as parameter_table keeps
        first_name.setdefault(id(param), name)
    known = {}
    for module, component in ((lm.parts.embed, "Embedding table"), (lm.parts.lm_head, "LM head (untied)")):
        weight = getattr(module, "weight", None)
        if weight is not None and id(weight) in first_name:
            known.setdefault(first_name[id(weight)], component)  # tied: the embedding name wins
    return [known.get(name) or component_of(name) for name in names]


def component_breakdown(lm: LoadedModel) -> pd.DataFrame:
    """Unique parameters per component: component, parameters, tensors, share (of the total), what.

    Tied tensors are counted once (parameter_table drops the duplicate), so
    `parameters.sum() == count_parameters(lm)`; a tied LM head has no row.
    """
    table = parameter_table(lm)
    table["component"] = components(lm, table["name"])
    grouped = table.groupby("component").agg(parameters=("numel", "sum"), tensors=("numel", "size"))
    order = [c for c in COMPONENT_ORDER if c in grouped.index]
    out = grouped.loc[order].reset_index()
    out["share"] = out["parameters"] / max(count_parameters(lm), 1)
    out["what"] = out["component"].map(COMPONENT_HELP).fillna("")
    return out


def parameter_list(lm: LoadedModel, one_layer: bool = False, search: str = "") -> pd.DataFrame:
    """The named-parameter list: name, component, shape, dtype, count (and `layers` in one-layer mode).

    Layers repeat, so `one_layer=True` keeps layer 0 of each stack (text and vision) plus
    everything outside the layers; `layers` says how many copies each row stands for.
    `search` keeps names containing it (case-insensitive).
    """
    table = parameter_table(lm)
    table["component"] = components(lm, table["name"])
    table["layer"] = table["name"].map(layer_of)
    table["shape"] = table["shape"].map(format_shape)
    table = table.rename(columns={"numel": "count"})
    if one_layer:
        copies = {}
        for name, layer in zip(table["name"], table["layer"]):
            if layer is not None:
                key = LAYER_INDEX.sub(r".\1.*.", name)
                copies[key] = copies.get(key, 0) + 1
        table = table[table["layer"].isna() | (table["layer"] == 0)].copy()
        table["layers"] = [copies.get(LAYER_INDEX.sub(r".\1.*.", n), 1) for n in table["name"]]
    if search.strip():
        table = table[table["name"].str.contains(search.strip(), case=False, regex=False)]
    columns = ["name", "component", "shape", "dtype", "count"] + (["layers"] if one_layer else [])
    return table[columns].reset_index(drop=True)


def format_shape(shape: tuple[int, ...]) -> str:
    return " × ".join(f"{d:,}" for d in shape) if shape else "scalar"


# ---------------------------------------------------------------- one layer, aligned by role


def _layer_roles(lm: LoadedModel, layer: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """role -> (full name, shape) for the text decoder's layer `layer`; role = path inside the layer."""
    layer = min(max(layer, 0), lm.num_layers - 1)
    prefix = next(n for n, m in lm.model.named_modules() if m is lm.parts.layers[layer]) + "."
    return {name: (prefix + name, tuple(p.shape)) for name, p in lm.parts.layers[layer].named_parameters()}


def _role_key(path: str) -> str:
    """Match key: the canonical component for projections (q_proj ↔ query), the leaf name for norms."""
    component = component_of("." + path)
    kind = path.rsplit(".", 1)[-1]
    if component in ("Norms", "Other"):
        return f"{component.removesuffix('s')}: {path}"
    return f"{component} ({kind})"


def aligned_layer(lm_a: LoadedModel | None, lm_b: LoadedModel | None, layer_a: int = 0,
                  layer_b: int | None = None) -> pd.DataFrame:
    """Layer `layer_a` of A and layer `layer_b` (default: the same index) of B side by side, matched by role.

    Columns: role, A tensor, A shape, B tensor, B shape. A role only one model has keeps
    the other side empty; a missing model (None) leaves its columns empty. Layers are clamped
    to each model's own range.
    """
    layer_b = layer_a if layer_b is None else layer_b
    sides = [_layer_roles(lm, layer) if lm is not None else {} for lm, layer in ((lm_a, layer_a), (lm_b, layer_b))]
    keyed = [{_role_key(path): (path, shape) for path, (_, shape) in side.items()} for side in sides]
    keys = list(keyed[0]) + [k for k in keyed[1] if k not in keyed[0]]
    order = {c: i for i, c in enumerate(COMPONENT_ORDER)}
    keys.sort(key=lambda k: order.get(component_of("." + keyed[0].get(k, keyed[1].get(k))[0]), 99))
    rows = []
    for key in keys:
        row = {"role": key}
        for label, side in zip("AB", keyed):
            path, shape = side.get(key, ("", ()))
            row[f"{label} tensor"] = path
            row[f"{label} shape (out, in)"] = format_shape(shape) if path else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=["role", "A tensor", "A shape (out, in)", "B tensor", "B shape (out, in)"])


# ---------------------------------------------------------------- finding a tensor


def tensor_names(lm: LoadedModel) -> list[str]:
    return parameter_table(lm)["name"].tolist()


def find_tensor(lm: LoadedModel, component: str, layer: int) -> str | None:
    """Name of the text-model tensor of `component` in decoder layer `layer` (clamped), or outside layers."""
    all_names = tensor_names(lm)
    names = [n for n, c in zip(all_names, components(lm, all_names))
             if is_text(n) and c == component and n.endswith("weight")]
    if not names:
        return None
    in_layers = [n for n in names if layer_of(n) is not None]
    if not in_layers:
        return names[0]
    layer = min(max(layer, 0), lm.num_layers - 1)
    return next((n for n in in_layers if layer_of(n) == layer), in_layers[0])


def get_tensor(lm: LoadedModel, name: str) -> torch.Tensor:
    """The parameter called `name` (read-only use). ValueError with a plain message otherwise."""
    name = name.strip()
    params = dict(lm.model.named_parameters())
    if name not in params:
        close = [n for n in params if name and name.lower() in n.lower()][:3]
        hint = f" Did you mean {', '.join(close)}?" if close else " The parameter list above shows every name."
        raise ValueError(f"{lm.name} has no tensor called '{name}'.{hint}")
    tensor = params[name]
    if not tensor.is_meta:
        return tensor
    if not lm.has_weights:
        raise ValueError(f"{lm.name} is loaded from its config only: '{name}' has a shape "
                         f"({format_shape(tuple(tensor.shape))}) but no values. Turn on 'Load the weights' to see them.")
    # offloaded by accelerate: the module holds a meta placeholder, the value lives in RAM or on disk
    module_name, _, param_name = name.rpartition(".")
    return parameter_value(lm.model.get_submodule(module_name), param_name)


# ---------------------------------------------------------------- bounded weight views


@dataclass(frozen=True)
class WeightView:
    """What the heatmaps and the histogram show for one tensor (all float32 NumPy)."""

    name: str
    shape: tuple[int, ...]
    block: np.ndarray  # (n_rows, n_cols) top-left block
    sample: np.ndarray  # (<=MAX_SIDE, <=MAX_SIDE) strided sample of the whole matrix
    row_step: int  # sample[i, j] = matrix[i * row_step, j * col_step]
    col_step: int
    hist_counts: np.ndarray  # (HIST_BINS,)
    hist_edges: np.ndarray  # (HIST_BINS + 1,)
    stats: dict[str, float]  # mean, std, min, max, values_used, values_total
    exact: bool  # statistics over every value (else over a fixed random sample)


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A 2-D view: vectors become one row, conv kernels (out, in, h, w) become (out, in*h*w)."""
    if tensor.ndim == 0:
        return tensor.reshape(1, 1)
    if tensor.ndim == 1:
        return tensor.reshape(1, -1)
    return tensor.reshape(tensor.shape[0], -1)


def weight_view(lm: LoadedModel, name: str, block: int = 100, max_side: int = MAX_SIDE,
                stats_sample: int = STATS_SAMPLE) -> WeightView:
    """Top-left block, strided whole-matrix sample, histogram and summary statistics of one tensor.

    Bounded work: the block reads block², the sample max_side², the statistics at most
    `stats_sample` values (a seeded random sample of the flattened tensor when it is larger,
    so a 262k × 2.5k embedding table takes milliseconds, not seconds).
    """
    tensor = get_tensor(lm, name)
    block = int(min(max(block, 1), MAX_BLOCK))
    with torch.no_grad():
        matrix = as_matrix(tensor)  # (rows, cols), a view: nothing copied yet
        rows, cols = matrix.shape
        top_left = matrix[:block, :block].float().cpu().numpy()  # (<=block, <=block)
        row_step, col_step = -(-rows // max_side), -(-cols // max_side)  # ceil: at most max_side cells
        sample = matrix[::row_step, ::col_step].float().cpu().numpy()  # (<=max_side, <=max_side)
        flat = tensor.reshape(-1)
        exact = flat.numel() <= stats_sample
        if not exact:  # seeded, so the same tensor always shows the same numbers
            generator = torch.Generator().manual_seed(0)
            index = torch.randint(flat.numel(), (stats_sample,), generator=generator).to(flat.device)
            flat = flat[index]
        values = flat.float().cpu().numpy()  # (<=stats_sample,)
    counts, edges = np.histogram(values, bins=HIST_BINS)
    stats = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
             "max": float(values.max()), "values_used": int(values.size), "values_total": int(tensor.numel())}
    return WeightView(name, tuple(tensor.shape), top_left, sample, row_step, col_step, counts, edges, stats, exact)


def matrix_frame(values: np.ndarray, row_step: int = 1, col_step: int = 1) -> pd.DataFrame:
    """Long form (row, column, value) for a heatmap; row/column are the original matrix indices."""
    r, c = np.indices(values.shape)
    return pd.DataFrame({"row": (r * row_step).ravel(), "column": (c * col_step).ravel(),
                         "value": values.ravel().astype(np.float64)})


def histogram_frame(view: WeightView) -> pd.DataFrame:
    return pd.DataFrame({"from": view.hist_edges[:-1], "to": view.hist_edges[1:], "count": view.hist_counts})


def stats_frame(view: WeightView) -> pd.DataFrame:
    s = view.stats
    basis = ("all" if view.exact else "a random sample of") + f" {s['values_used']:,} of {s['values_total']:,} values"
    return pd.DataFrame({"statistic": ["mean", "std", "min", "max", "computed from"],
                         "value": [f"{s['mean']:.5g}", f"{s['std']:.5g}", f"{s['min']:.5g}", f"{s['max']:.5g}", basis]})


def layer_choices(num_layers: int) -> list[str]:
    """Options of the layer picker: named positions first, then every index."""
    return ["last", "first", "middle"] + [str(i) for i in range(num_layers)]


def resolve_layer(lm: LoadedModel, choice: str) -> int:
    """'last' / 'first' / 'middle' / an index (clamped to this model's layers) -> layer index."""
    named = {"first": 0, "middle": lm.num_layers // 2, "last": lm.num_layers - 1}
    if choice in named:
        return named[choice]
    try:
        return min(max(int(choice), 0), lm.num_layers - 1)
    except ValueError:
        raise ValueError(f"'{choice}' is not a layer; pick first, middle, last or a number.") from None


HEATMAP_COMPONENTS = ["MLP up", "MLP gate", "MLP down", "Attention q", "Attention k", "Attention v", "Attention o",
                      "Embedding table", "LM head (untied)", "Norms"]
