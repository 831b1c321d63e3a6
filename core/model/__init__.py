"""The model layer every other part of core stands on: the `LoadedModel` type and the errors
(`loaded.py`, `errors.py`), where each architecture keeps its parts (`parts.py`), reading a shared
model's tensors without changing it (`reading.py`), and the one context manager that may put hooks
on it (`hooks.py`). It imports nothing else from core."""
