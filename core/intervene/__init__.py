"""Analyses that change what the model does (the dashboard's Intervene pages): next token and
generation, optionally steered (`generation.py`), Patchscopes (`patchscopes.py`) and steering
vectors with their layer sweep (`steering.py`). Every edit goes through core/model/hooks.py."""
