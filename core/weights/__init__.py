"""Read-only analyses of the weights (the dashboard's Weights pages): parameter counts (`params.py`),
the model card and config facts (`card.py`), parameter groups and bounded weight views
(`architecture.py`), the vocabulary (`vocabulary.py`) and embedding neighbours (`embeddings.py`)."""
