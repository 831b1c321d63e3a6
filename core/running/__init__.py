"""Read-only analyses of the model running on text (the dashboard's Running text pages): one frozen
forward pass per prompt (`trace.py`), hidden states and contextual similarity (`context.py`),
hidden-state maps (`maps.py`), the logit lens (`lens.py`) and attention heads (`attention.py`)."""
