"""Where models come from and where they live: what a user typed turned into a source
(`sources.py`), GGUF files converted once to a cached snapshot (`gguf.py`), where the weights go
on GPUs, RAM and disk (`placement.py`), `load_model` itself (`load.py`), and the server-wide store
of loaded models and traces (`store.py`). Loading imports no analysis."""
