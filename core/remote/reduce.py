"""Small torch-only helpers that remote traces call where the model runs, shipped with each request.

Why here and torch-only: a function called inside a remote trace is shipped to the server by value
(`nnsight.register(this module)`, core.remote.lens), so it may use torch and nothing of ours that is
not shipped with it. The lens's own reduction is not here: it is core.running.lens_reduce, the
code the local lens runs too (one description of the analysis, issue 18), shipped the same way.
"""

from __future__ import annotations


def first(output):
    """A block's output as a tensor: its first element when the block returns a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output
