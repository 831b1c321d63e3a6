"""The errors every layer of core raises, importable without pulling in loading or an analysis.

Their messages are written for the user: pages show them in the model's own column as they are.
"""


class ModelLoadError(RuntimeError):
    """A model could not be loaded. The message is written for the user (never holds a token)."""


class UnsupportedArchitecture(ModelLoadError):
    """A part the dashboard needs is missing from this architecture. The message is written for the user.

    A ModelLoadError, so pages show it in the model's own column like any loading problem (ui.side_by_side).
    """
