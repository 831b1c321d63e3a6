"""core: a Streamlit-free library for looking inside two causal LMs side by side.

    from core import load_model, count_parameters, parameter_table, tokenize
    lm = load_model("smollm2-135m")          # embedded, offline
    cfg_only = load_model("llama-3.2-3b", weights=False)   # real config, meta device
"""

from core.model.loaded import LoadedModel
from core.model.errors import ModelLoadError
from core.loading.load import load_model
from core.weights.params import count_parameters, parameter_table
from core.loading.sources import DEFAULT_PAIR, PRESETS, SourceError, resolve_source
from core.text.tokens import tokenize
from core.running.trace import Trace, run_trace
from core.running.context import similarity_curves, word_vectors_across
from core.running.lens import logit_lens, token_trajectory
from core.weights.embeddings import nearest_tokens
from core.running.attention import attention_weights
from core.intervene.generation import Generation, Steer, generate, next_token_table
from core.intervene.steering import steering_vector
from core.intervene.patchscopes import patchscope, word_position
from core.model.errors import UnsupportedArchitecture
from core.cause.patching import activation_patching, patching_agreement
from core.cause.attribution import token_attribution
from core.cause.blocks import block_contributions, block_token_effects
from core.cause.reads import what_blocks_read

__all__ = [
    "Generation", "Steer", "generate", "next_token_table", "steering_vector", "patchscope", "word_position",
    "attention_weights",
    "activation_patching", "patching_agreement", "token_attribution", "block_contributions", "block_token_effects",
    "what_blocks_read", "UnsupportedArchitecture",
    "similarity_curves", "word_vectors_across", "logit_lens", "token_trajectory", "nearest_tokens",
    "DEFAULT_PAIR", "PRESETS", "LoadedModel", "ModelLoadError", "SourceError", "Trace",
    "count_parameters", "load_model", "parameter_table", "resolve_source", "run_trace", "tokenize",
]
