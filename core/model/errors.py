"""The errors every layer of core raises, and its one check of whole-number arguments; importable
without pulling in loading or an analysis.

Their messages are written for the user: pages show them in the model's own column as they are.
"""

import operator


class ModelLoadError(RuntimeError):
    """A model could not be loaded. The message is written for the user (never holds a token)."""


class UnsupportedArchitecture(ModelLoadError):
    """A part the dashboard needs is missing from this architecture. The message is written for the user.

    A ModelLoadError, so pages show it in the model's own column like any loading problem (ui.side_by_side).
    """


def whole_number(value) -> int | None:
    """`value` as a Python int when it is a whole number of any integral type (int, np.int64, a 0-d
    integer tensor: whatever `operator.index` accepts), else None. A bool is not a number here, and a
    float is refused even when it is 3.0: a layer or a count typed as a float is a mistake to report."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None
