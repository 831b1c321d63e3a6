"""Editing the residual stream of a shared model, safely.

Every hook in core is attached by `hooked`, which replaces (or just records) a
module's input or output. An intervention (steering, Patchscopes) changes `hidden_states[l]` — the
input of decoder layer l, see core/model/parts.py — while the model runs. It is a
forward pre-hook on `layers[l]` that rewrites the block's hidden-states
argument.

Models are shared by every browser session, so hooks exist only inside
`hooked` (and `edited_residual`, `recorded_input`, built on it), which
- holds the model's lock for its whole life: no other session's forward pass
  can run while a hook is attached (a trace started meanwhile waits, then runs
  on the clean model);
- removes every hook when the block exits, also on an exception or when
  Streamlit stops the script (StopException is an Exception raised inside it).

    def add(hidden):                     # (batch, T, hidden) -> same shape
        return hidden + 4.0 * direction
    with edited_residual(lm, {6: add}):
        lm.model.generate(...)           # runs with the edit; the lock is held
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Mapping

import torch

from core.model.errors import whole_number
from core.model.loaded import LoadedModel

Edit = Callable[[torch.Tensor], torch.Tensor]  # hidden (batch, T, hidden) -> edited hidden, same shape


def check_layer(lm: LoadedModel, layer: int) -> int:
    """`layer` as a Python int indexing hidden_states where an edit can go (0 <= layer < number of layers).

    hidden_states[l] is the input of block l = the output of block l - 1; 0 is the embedding output.
    Any integral type is accepted (np.int64 from our own DataFrames included); a float or a bool is not.
    """
    index = whole_number(layer)
    if index is None:
        raise ValueError(f"The layer must be a whole number, not {layer!r}.")
    if not 0 <= index < lm.num_layers:
        raise ValueError(f"Layer {index} is out of range for {lm.name}: choose 0 … {lm.num_layers - 1} "
                         "(hidden_states[l], the input of block l = the output of block l − 1; "
                         "0 = the embedding output).")
    return index


def _input_hook(edit: Edit):
    """A forward pre-hook that replaces a module's first input (positional, or the `hidden_states` keyword)."""
    def hook(module, args, kwargs):
        if args:  # most modules take hidden_states as their first positional argument
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    return hook


def _output_hook(edit: Edit):
    """A forward hook that replaces a module's output (the first element where it returns a tuple)."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    return hook


def _fresh_head_input(x: torch.Tensor) -> torch.Tensor:
    """The LM head's input as a (batch, 1, H) tensor with its own strides (same values).

    model.generate's first step slices `hidden[:, -1:, :]`, a view that keeps the stride of the whole
    prompt, and torch's CPU bf16 linear is ~90x slower on it (Llama-3.2-3B shape: 3.8 s instead of
    0.044 s). A copy costs H numbers per row.
    """
    if x.dim() == 3 and x.shape[1] == 1 and x.stride(0) != x.shape[-1]:
        return x.clone(memory_format=torch.contiguous_format)
    return x


@contextmanager
def hooked(lm: LoadedModel, *, inputs: Mapping[torch.nn.Module, Edit] | None = None,
           outputs: Mapping[torch.nn.Module, Edit] | None = None):
    """While inside, each module in `inputs` gets edit(its first input) instead of its first input, and each
    module in `outputs` returns edit(its output) (the first element of a tuple output). An edit may return
    its argument unchanged after keeping it: that is how values are recorded.

    The one place hooks are attached in core. Holds `lm.lock` throughout; every hook is removed on exit,
    whatever happens. Callers run `lm.model` directly inside the block (never a function that takes the
    lock again).
    """
    with lm.lock:
        handles = []
        try:
            for module, edit in (inputs or {}).items():
                handles.append(module.register_forward_pre_hook(_input_hook(edit), with_kwargs=True))
            for module, edit in (outputs or {}).items():
                handles.append(module.register_forward_hook(_output_hook(edit)))
            yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def edited_residual(lm: LoadedModel, edits: Mapping[int, Edit]):
    """While inside, hidden_states[l] is replaced by edits[l](hidden_states[l]) on every forward pass.

    Holds `lm.lock` throughout; every hook is removed on exit, whatever happens (`hooked`).
    Generation runs inside this block even without edits, which also gives the LM head a
    well-strided input (`_fresh_head_input`).
    """
    layers = lm.parts.layers
    for layer in edits:
        check_layer(lm, layer)
    inputs = {layers[layer]: edit for layer, edit in edits.items()}
    with hooked(lm, inputs={lm.parts.lm_head: _fresh_head_input, **inputs}):  # holds lm.lock
        yield


@contextmanager
def recorded_input(lm: LoadedModel, module: torch.nn.Module):
    """While inside, the first input of `module` on each forward pass is appended to the yielded list.

    Used by the trace to keep OPT-350m's last hidden state in the stack's own width (the input of
    `project_out`; Hugging Face returns it already projected). Holds `lm.lock`; the hook is removed on exit.
    """
    seen: list[torch.Tensor] = []

    def keep(hidden: torch.Tensor) -> torch.Tensor:
        seen.append(hidden.detach())
        return hidden

    with hooked(lm, inputs={module: keep}):
        yield seen
