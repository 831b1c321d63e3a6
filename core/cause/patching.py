"""Activation patching: where in the model does the answer live?

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"), worded as in
Heimersheim & Nanda 2024, "How to use and interpret activation patching". Two prompts differ in a word:
clean "The capital of France is" → " Paris", corrupted "The capital of Italy is" → " Rome". Run the
corrupted prompt, but put one value of the clean run in its place — one site, one layer, one position —
and see how far the answer moves back:

    m = logit(answer) − logit(foil) at the last position
    score = (m_patched − m_corrupted) / (m_clean − m_corrupted)     # 0: the corrupted run, 1: the clean run

Sites (the layer convention of core/model/parts.py):
- "resid": layer l is hidden_states[l], the input of block l (0 = the embedding output), 0 <= l < layers;
- "attn" / "mlp": what block l's attention / MLP adds to the residual stream, after any norm the block
  applies to it (Gemma's post-attention and post-feedforward norms; `Parts.sub_blocks`).

Exact patching costs one forward pass per cell. They are batched: each forward carries the clean run in
row 0, the corrupted run in row 1 and one patched cell in every further row; a patched row copies its
value from row 0 of the same batch at the same hook, so every number of a batch comes from one
computation (patching the differing position at layer 0 gives exactly the clean run's metric).

Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale";
Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery") approximates the whole
grid to first order from two forwards and one backward:

    m_patched − m_corrupted ≈ (a_clean − a_corrupted) · ∂m/∂a at the corrupted run
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

import core.cause.cause_reduce as shared
from core.cause.inputs import encoded_prompt, first_token, ids_tensor, last_logits
from core.model.hooks import hooked
from core.model.loaded import LoadedModel
from core.text.tokens import display_token

SITES = ("resid", "attn", "mlp")
SITE_NAMES = {"resid": "residual stream", "attn": "attention output", "mlp": "MLP output"}
METHODS = ("exact", "attribution")
MAX_ROWS_PER_FORWARD = 64  # patched cells per batched forward pass (plus the clean and corrupted rows)

Progress = Callable[[int, int], None]  # (done, total)


def site_modules(lm: LoadedModel, site: str) -> list[torch.nn.Module]:
    """Per layer, the module whose input ("resid") or output ("attn", "mlp") is the patched value."""
    if site not in SITES:
        raise ValueError(f"Unknown site {site!r}: choose one of {', '.join(SITES)}.")
    parts = lm.parts
    if site == "resid":
        return list(parts.layers)
    blocks = [parts.sub_blocks(layer) for layer in range(parts.num_layers)]
    return [b.attn_writes if site == "attn" else b.mlp_writes for b in blocks]


def _hook_kind(site: str) -> str:
    return "inputs" if site == "resid" else "outputs"


def check_pair(lm: LoadedModel, clean: str, corrupted: str) -> tuple[list[int], list[int], list[int]]:
    """Token ids of both prompts and the positions where they differ, or a message."""
    clean_ids, _ = encoded_prompt(lm, clean, "clean prompt")
    corrupted_ids, _ = encoded_prompt(lm, corrupted, "corrupted prompt")
    if len(clean_ids) != len(corrupted_ids):
        raise ValueError(
            f"In {lm.name} the clean prompt is {len(clean_ids)} tokens and the corrupted prompt "
            f"{len(corrupted_ids)}. Patching puts each position of the clean run into the same position of the "
            "corrupted run, so both must have the same number of tokens: change the words until they do "
            f"(clean: {' | '.join(display_token(lm, i) for i in clean_ids)}; "
            f"corrupted: {' | '.join(display_token(lm, i) for i in corrupted_ids)}).")
    differing = [p for p, (a, b) in enumerate(zip(clean_ids, corrupted_ids)) if a != b]
    if not differing:
        raise ValueError(f"The clean and corrupted prompts are the same tokens in {lm.name}: change a word.")
    return clean_ids, corrupted_ids, differing


def _named(lm, text: str | None, role: str, notes: list[str]) -> int | None:
    """The token a given answer / foil string stands for (None: the run's own top token, found later)."""
    if text is None:
        return None
    token_id, note = first_token(lm, text, role)
    notes += [note] if note else []
    return token_id


def _defaults(lm, answer_id, foil_id, top, notes: list[str]) -> tuple[int, int]:
    """The answer and the foil, the runs' own top tokens (`top`: the clean and corrupted runs') where not given."""
    if answer_id is None:
        answer_id = int(top[0])
        notes.insert(0, f"The answer is the clean run's top next token, {display_token(lm, answer_id)!r}.")
    if foil_id is None:
        foil_id = int(top[1])
        notes.append(f"The foil is the corrupted run's top next token, {display_token(lm, foil_id)!r}.")
    if answer_id == foil_id:
        raise ValueError(f"The answer and the foil are the same token in {lm.name} "
                         f"({display_token(lm, answer_id)!r}), so their logit difference is always 0. "
                         "Give two different answers.")
    return answer_id, foil_id


def _answer_and_foil(lm, clean_ids, corrupted_ids, answer, foil) -> tuple[int, int, list[str]]:
    notes: list[str] = []
    answer_id, foil_id = _named(lm, answer, "answer", notes), _named(lm, foil, "foil", notes)
    top = None
    if answer_id is None or foil_id is None:  # the runs' own top tokens
        with hooked(lm), torch.inference_mode():
            top = last_logits(lm, ids_tensor(lm, [clean_ids, corrupted_ids])).argmax(-1).tolist()
    answer_id, foil_id = _defaults(lm, answer_id, foil_id, top, notes)
    return answer_id, foil_id, notes


def _metric(logits: torch.Tensor, answer_id: int, foil_id: int) -> torch.Tensor:
    return shared.metric(logits, answer_id, foil_id)  # (batch,) float64


def _refuse_flat(lm, m_clean: float, m_corrupted: float, answer_id: int, foil_id: int) -> None:
    if m_clean == m_corrupted:
        raise ValueError(f"In {lm.name}, logit({display_token(lm, answer_id)!r}) − logit("
                         f"{display_token(lm, foil_id)!r}) is {m_clean:.4g} in both the clean and the corrupted "
                         "run, so no patch can move it: the score (m_patched − m_corrupted) / (m_clean − "
                         "m_corrupted) would divide by 0. Choose prompts or answers the model tells apart.")


# ---------------------------------------------------------------- exact: one batched forward per chunk


def _copy_from_clean_row(rows: list[int], positions: list[int], length: int):
    """An edit that sets hidden[row, position] = hidden[0, position] for each (row, position)."""
    rows_t, positions_t = torch.tensor(rows), torch.tensor(positions)
    return lambda hidden: shared.copy_from_clean(hidden, rows_t, positions_t, length)


def _exact_grid(lm, site, clean_ids, corrupted_ids, answer_id, foil_id, progress) -> tuple[np.ndarray, float, float]:
    modules = site_modules(lm, site)
    T = len(clean_ids)
    chunks = shared.cell_chunks(len(modules), T, MAX_ROWS_PER_FORWARD)
    scores, done = [], 0
    m_clean = m_corrupted = None
    for chunk in chunks:
        edits = {modules[layer]: _copy_from_clean_row(rows, positions, T) for layer, (rows, positions) in chunk.items()}
        batch = ids_tensor(lm, [clean_ids] + [corrupted_ids] * (shared.chunk_rows(chunk) - 1))
        with hooked(lm, **{_hook_kind(site): edits}), torch.inference_mode():
            m = _metric(last_logits(lm, batch), answer_id, foil_id).cpu()  # (batch,)
        if m_clean is None:
            m_clean, m_corrupted = float(m[0]), float(m[1])
            _refuse_flat(lm, m_clean, m_corrupted, answer_id, foil_id)
        # Each chunk is normalised by its own clean and corrupted rows (the same numbers, computed alongside).
        scores.append(shared.patch_scores(m))
        done += len(m) - 2
        if progress:
            progress(done, len(modules) * T)
    return torch.cat(scores).numpy().reshape(len(modules), T), m_clean, m_corrupted


# ---------------------------------------------------------------- attribution: two forwards, one backward


def _recorder(kept: list, leaf: bool = False):
    def edit(hidden: torch.Tensor) -> torch.Tensor:
        if leaf:  # the graph starts here: the model's own weights do not ask for gradients
            hidden = hidden.detach().requires_grad_(True)
        kept.append(hidden)
        # The model goes on with a copy: Falcon adds the attention output into the MLP's output in place,
        # which would change the kept value (and its version, for autograd).
        return hidden.clone()

    return edit


def _attribution_grid(lm, site, clean_ids, corrupted_ids, answer_id, foil_id, progress):
    modules = site_modules(lm, site)
    layers = lm.parts.layers
    clean: list[list[torch.Tensor]] = [[] for _ in modules]
    with hooked(lm, **{_hook_kind(site): {m: _recorder(kept) for m, kept in zip(modules, clean)}}), \
            torch.inference_mode():
        m_clean = float(_metric(last_logits(lm, ids_tensor(lm, [clean_ids])), answer_id, foil_id)[0])
    corrupted: list[list[torch.Tensor]] = [[] for _ in modules]
    start: list[torch.Tensor] = []
    recorders = {m: _recorder(kept) for m, kept in zip(modules, corrupted)}
    inputs = recorders if site == "resid" else {}
    outputs = {} if site == "resid" else recorders
    # hidden_states[0] becomes a leaf that asks for gradients (for "resid" it is also the layer-0 value).
    first = inputs.pop(layers[0], None)
    inputs[layers[0]] = _chain(_recorder(start, leaf=True), first)
    with hooked(lm, inputs=inputs, outputs=outputs), torch.enable_grad():
        m = _metric(last_logits(lm, ids_tensor(lm, [corrupted_ids])), answer_id, foil_id)[0]
        values = [kept[0] for kept in corrupted]
        grads = torch.autograd.grad(m, values, allow_unused=True)
    m_corrupted = float(m.detach())
    _refuse_flat(lm, m_clean, m_corrupted, answer_id, foil_id)
    scores = np.zeros((len(modules), len(clean_ids)))
    for layer, (value, grad) in enumerate(zip(values, grads)):
        if grad is None:  # a value the metric does not depend on
            continue
        scores[layer] = shared.first_order(clean[layer][0].to(value.device), value.detach(), grad,
                                           len(clean_ids)).cpu().numpy() / (m_clean - m_corrupted)  # (T,)
    if progress:
        progress(1, 1)
    return scores, m_clean, m_corrupted


def _chain(first, second):
    if second is None:
        return first
    return lambda hidden: second(first(hidden))


# ---------------------------------------------------------------- the public function


def activation_patching(lm: LoadedModel, clean: str, corrupted: str, *, answer: str | None = None,
                        foil: str | None = None, site: str = "resid", method: str = "exact",
                        progress: Progress | None = None) -> pd.DataFrame:
    """Patch the clean run into the corrupted run at every (layer, position) of one site.

    Returns columns layer, position, token (the clean prompt's token), corrupted_token, score, with score =
    (m_patched − m_corrupted) / (m_clean − m_corrupted) and m = logit(answer) − logit(foil) at the last
    position. `answer` / `foil`: strings, each meaning its first token; the defaults are the clean and the
    corrupted run's own top tokens. site "resid": layer l patches hidden_states[l] (the input of block l,
    0 = the embedding output), 0 <= l < layers; "attn" / "mlp": what block l's attention / MLP adds to the
    residual stream. method "exact" or "attribution". attrs: model, site, method, answer, foil, answer_id,
    foil_id, m_clean, m_corrupted, differing_positions, notes.
    """
    return patching_sites(lm, clean, corrupted, answer=answer, foil=foil, sites=(site,), method=method,
                          progress=progress)[site]


def patching_sites(lm: LoadedModel, clean: str, corrupted: str, *, answer: str | None = None,
                   foil: str | None = None, sites=SITES, method: str = "exact",
                   progress: Progress | None = None) -> dict[str, pd.DataFrame]:
    """activation_patching's table for each of `sites` (the page's "All three"): a remote model runs every
    site's grid in ONE job; a local one runs each site as activation_patching does."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose 'exact' or 'attribution'.")
    for site in sites:
        if site not in SITES:
            raise ValueError(f"Unknown site {site!r}: choose one of {', '.join(SITES)}.")
    clean_ids, corrupted_ids, differing = check_pair(lm, clean, corrupted)
    if getattr(lm, "remote", None) is not None:
        grids, answer_id, foil_id, notes = _remote_grids(lm, sites, method, clean_ids, corrupted_ids, answer, foil)
    else:
        answer_id, foil_id, notes = _answer_and_foil(lm, clean_ids, corrupted_ids, answer, foil)
        grid_of = _exact_grid if method == "exact" else _attribution_grid
        grids = {site: grid_of(lm, site, clean_ids, corrupted_ids, answer_id, foil_id, progress) for site in sites}
    clean_tokens = [display_token(lm, i) for i in clean_ids]
    corrupted_tokens = [display_token(lm, i) for i in corrupted_ids]
    tables = {}
    for site, (grid, m_clean, m_corrupted) in grids.items():
        layers, positions = grid.shape  # (layers, T)
        table = pd.DataFrame({
            "layer": np.repeat(np.arange(layers), positions),
            "position": np.tile(np.arange(positions), layers),
            "token": clean_tokens * layers,
            "corrupted_token": corrupted_tokens * layers,
            "score": grid.reshape(-1),
        })
        table.attrs.update(model=lm.name, site=site, method=method, answer=display_token(lm, answer_id),
                           foil=display_token(lm, foil_id), answer_id=answer_id, foil_id=foil_id, m_clean=m_clean,
                           m_corrupted=m_corrupted, differing_positions=differing, notes=notes,
                           num_layers=lm.num_layers)
        tables[site] = table
    return tables


def _remote_grids(lm, sites, method, clean_ids, corrupted_ids, answer, foil):
    """Every site's grid of a remote model in ONE job: exact (core.remote.cause) or attribution (cause_grad)."""
    from core.remote.cause import patching_job
    from core.remote.cause_grad import attribution_job

    notes: list[str] = []
    answer_id, foil_id = _named(lm, answer, "answer", notes), _named(lm, foil, "foil", notes)
    if answer_id is not None and foil_id is not None:
        _defaults(lm, answer_id, foil_id, None, [])  # two typed tokens that are one: refused before any job
    sites, given = sorted(sites, key=SITES.index), sites  # forward order within a layer: residual, attention, MLP
    asked = [(site_modules(lm, site), site == "resid") for site in sites]
    if method == "exact":
        got = patching_job(lm, asked, clean_ids, corrupted_ids, answer_id, foil_id, MAX_ROWS_PER_FORWARD)
    else:
        got = attribution_job(lm, asked, clean_ids, corrupted_ids, answer_id, foil_id)
    answer_id, foil_id = _defaults(lm, answer_id, foil_id, got.get("top"), notes)
    grids = {}
    for site, grid, (m_clean, m_corrupted) in zip(sites, got["grid"], got["m"]):  # (layers, T), (2,) per site
        _refuse_flat(lm, float(m_clean), float(m_corrupted), answer_id, foil_id)
        grids[site] = grid, float(m_clean), float(m_corrupted)
    return {site: grids[site] for site in given}, answer_id, foil_id, notes


def patching_agreement(exact: pd.DataFrame, attribution: pd.DataFrame) -> float:
    """Pearson r between the exact and the attribution scores of the same cells (NaN when one is constant)."""
    merged = exact.merge(attribution, on=["layer", "position"], suffixes=("_exact", "_attribution"))
    a, b = merged["score_exact"].to_numpy(float), merged["score_attribution"].to_numpy(float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
