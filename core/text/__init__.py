"""The text a model reads: its tokens exactly as it sees them (`tokens.py`), the chat template of an
instruct model (`chat.py`), and the alignment of two tokenizers' tokens on the same characters
(`align.py`)."""
