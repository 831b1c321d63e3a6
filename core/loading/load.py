"""Load a causal LM (or only its architecture) into a `LoadedModel`.

Every source ends up as a local snapshot folder loaded by one code path:
hub ids are downloaded (safetensors only), GGUF files are converted once to a
cached folder (`core.loading.gguf`), local folders are used as they are. With
`weights=False` the architecture is built on the meta device from the config
alone: no download of weights, no memory, exact parameter counts.

Attention weights are only returned by the eager attention implementation
(sdpa silently returns None), so every model is loaded with
`attn_implementation="eager"`.

`remote=` (True: NDIF, a URL: a self-hosted NDIF, "local": nnsight's local simulation of NDIF)
wraps the model for nnsight (core.remote.model): True / a URL build it on the meta device from
its config and tokenizer, "local" loads the weights here and wraps that same module.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import torch

from core.model.errors import ModelLoadError
from core.model.loaded import LoadedModel
from core.model.reading import execution_device, inverse_norms
from core.loading.gguf import convert_gguf
from core.loading.placement import fit_check, load_weights
from core.loading.sources import PRESETS, Source, SourceError, embedded_gguf_path, resolve_source
from core.remote.connection import resolve_target
from core.remote.errors import RemoteError
from core.remote.model import remote_model, repo_id_of_folder

LARGE_MODEL_PARAMS = 1_000_000_000  # above this, CPU loads default to bfloat16
MEMORY_HEADROOM = 1.15  # weights + activations/fragmentation margin when checking fit
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt"]
REMOTE_HUB_FILES = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt"]  # config and tokenizer, no weights


# ---------------------------------------------------------------- choices


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(num_params: int, device: str, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32 for small models (exact, and fast enough); bf16 for large ones (half the memory)."""
    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.bfloat16 if num_params > LARGE_MODEL_PARAMS else torch.float32


def available_memory(device: str) -> int:
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    return int(psutil.virtual_memory().available)


def check_fits(num_params: int, dtype: torch.dtype, available: int, name: str) -> int:
    """Raise ModelLoadError when the weights would not fit; return the estimated bytes."""
    needed = num_params * torch.tensor([], dtype=dtype).element_size()
    if needed * MEMORY_HEADROOM > available:
        gib = 1024**3
        raise ModelLoadError(
            f"{name} needs about {needed / gib:.1f} GiB in {str(dtype).removeprefix('torch.')}, "
            f"but only {available / gib:.1f} GiB of memory is free. Pick a smaller model, "
            "choose bfloat16, or unload the other model first."
        )
    return needed


# ---------------------------------------------------------------- hub access


def resolve_token(token: str | None = None) -> str | None:
    """An explicit token, else HF_TOKEN, else the `hf auth login` cache. Never logged."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def hub_error_message(error: Exception, repo_id: str) -> str:
    """Translate a huggingface_hub / network exception into a message for the user."""
    from huggingface_hub import errors

    page = f"https://huggingface.co/{repo_id}"
    offline = (
        f"Offline: could not reach the Hugging Face hub for {repo_id}. "
        "Use a local folder, a .gguf file, or the embedded pair (smollm2-135m, gemma-3-270m)."
    )
    # Checked first: with no connection the hub client raises LocalEntryNotFoundError, a subclass of
    # EntryNotFoundError ("no such file in the repo"), so the order of these tests matters.
    if isinstance(error, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return offline
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, errors.GatedRepoError) or status in (401, 403):
        return (
            f"{repo_id} is gated: accept the licence at {page} and provide a token "
            "(HF_TOKEN, `hf auth login`, or .streamlit/secrets.toml)."
        )
    if isinstance(error, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)) or status == 404:
        return f"No such model: {repo_id} was not found on the Hugging Face hub ({page})."
    if isinstance(error, errors.RemoteEntryNotFoundError):
        return f"{repo_id} has no config.json: it is not a transformers model."
    return offline


def hub_download(repo_id: str, token: str | None, config_only: bool) -> Path:
    """Download a hub snapshot (safetensors only) and return its local folder."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json"] if config_only else HUB_FILES
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, token=resolve_token(token)))
    except Exception as error:  # every hub/network failure becomes one readable message
        raise ModelLoadError(hub_error_message(error, repo_id)) from None


# ---------------------------------------------------------------- config checks


def read_config(folder: Path, name: str | None = None):
    from transformers import AutoConfig

    if not (folder / "config.json").exists():
        raise ModelLoadError(f"{folder} has no config.json: it is not a transformers model folder.")
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(_config_error(folder, error, name or folder.name)) from None


def _config_error(folder: Path, error: Exception, name: str) -> str:
    """Why a config.json cannot be used: custom code we do not run, an architecture transformers lacks, or junk."""
    import transformers

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raw = {}
    kind = raw.get("model_type") or ", ".join(raw.get("architectures") or []) or "unknown"
    if isinstance(raw, dict) and raw.get("auto_map"):
        return (f"{name} needs its own Python code to run (architecture {kind!r}, trust_remote_code): "
                "this dashboard never runs code downloaded with a model. Pick a model whose architecture "
                "is built into transformers (Llama, Gemma, Qwen, Mistral, GPT-2, …).")
    if "does not recognize this architecture" in str(error):
        return (f"{name} uses the architecture {kind!r}, which transformers {transformers.__version__} "
                "does not know. Pick a model with a built-in architecture (Llama, Gemma, Qwen, Mistral, GPT-2, …).")
    return f"The config.json in {folder} cannot be read: {error}"


def check_causal(config, name: str) -> None:
    """Refuse encoders (BERT…) and encoder-decoders: the pages need a next-token model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    causal_names = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
    if getattr(config, "is_encoder_decoder", False):
        ok = False
    elif architectures:
        ok = any(a.endswith(causal_names) for a in architectures)
    else:
        ok = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and config.model_type not in ("bert", "roberta")
    if not ok:
        kind = ", ".join(architectures) or config.model_type
        raise ModelLoadError(
            f"{name} is not a causal (next-token) language model ({kind}); this dashboard compares "
            "decoder models such as Llama and Gemma."
        )


def build_on_meta(config) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, attn_implementation="eager")
    return model.eval()


def count_unique_parameters(model: torch.nn.Module) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


# ---------------------------------------------------------------- loading


def _local_folder(source: Source, token: str | None, weights: bool, progress,
                  available_bytes: int | None = None) -> Path | None:
    """The snapshot folder to load from (None: config-only preset with a shipped config)."""
    if source.is_gguf:
        gguf = Path(source.location) if source.kind == "gguf" else embedded_gguf_path(source.location)
        return convert_gguf(gguf, progress, available_bytes)  # fit-checked from the GGUF header first
    if source.kind == "folder":
        return Path(source.location)
    if not weights and source.shipped_config is not None:
        return None
    if progress:
        progress(0.1, f"Downloading {source.location} from the Hugging Face hub")
    return hub_download(source.location, token, config_only=not weights)


def load_model(
    source: str,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    weights: bool = True,
    token: str | None = None,
    progress=None,
    available_bytes: int | None = None,
    device_map: str | None = "auto",
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    remote: bool | str = False,
    ndif_key: str | None = None,
    ndif_repo_id: str | None = None,
) -> LoadedModel:
    """Load `source` (preset, HF repo id, local folder or .gguf file).

    weights=False builds the architecture on the meta device from the config only.
    `device_map`: "auto" spreads the weights over GPUs, then CPU RAM, then disk (accelerate's
    big-model inference, see core/loading/placement.py); "gpu" / "cpu" keep everything in one memory
    and refuse what does not fit; "disk" offloads every decoder layer; None loads onto
    `device` (given explicitly, `device` implies None). `max_memory` ({0: bytes, "cpu": bytes})
    overrides the free-memory reading for the plan; `offload_folder` is where weights that must
    be rewritten for disk offload go (default: a folder under the cache, removed with the model).
    `progress(fraction, message)` is called as loading advances; the plan is shown before loading.
    `available_bytes` overrides the free-RAM reading (tests, planning).
    `remote`: False (here), True (NDIF, host from NDIF_HOST), an http(s) URL (a self-hosted NDIF) or
    "local" (nnsight's local simulation): a core.remote.model.RemoteLoadedModel, see load_remote.
    Raises ModelLoadError / SourceError with a message meant for the user.
    """
    if remote is not False and remote is not None:
        return load_remote(source, remote, ndif_key=ndif_key, ndif_repo_id=ndif_repo_id, device=device,
                           dtype=dtype, token=token, progress=progress, available_bytes=available_bytes,
                           device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    started = time.perf_counter()
    try:
        resolved = resolve_source(source)
    except SourceError as error:
        raise ModelLoadError(str(error)) from None
    if device is not None and device_map == "auto":
        device_map = None
    device = pick_device(device)
    folder = _local_folder(resolved, token, weights, progress, available_bytes)
    config = read_config(folder, source) if folder else _shipped_config(resolved)
    check_causal(config, source)
    tokenizer = load_tokenizer(folder) if folder else None

    meta = build_on_meta(config)
    num_params = count_unique_parameters(meta)
    chosen_dtype = pick_dtype(num_params, device, dtype)
    if not weights:
        return LoadedModel(source, resolved, meta, tokenizer, False, "meta", chosen_dtype,
                           time.perf_counter() - started, resolved.is_gguf)

    _require_safetensors(folder, source)
    plan = None
    if device_map is None:
        free = available_bytes if available_bytes is not None else available_memory(device)
        check_fits(num_params, chosen_dtype, free, source)
    else:
        plan = fit_check(meta, chosen_dtype, device_map, max_memory, available_bytes, folder, offload_folder, source)
        if progress:
            progress(0.7, f"{source}: {plan.describe()}")
    if progress:
        progress(0.8, f"Loading the weights of {source} ({num_params / 1e6:,.0f} M parameters)")
    model = load_weights(folder, chosen_dtype, device, source, plan, offload_folder)
    if plan is not None:
        # Where the token ids must go: the embedding's execution device (cuda:0 for a model spread over GPUs).
        device = str(execution_device(model.get_input_embeddings()))
    lm = LoadedModel(source, resolved, model, tokenizer, True, device, chosen_dtype, 0.0, resolved.is_gguf,
                     plan=plan)
    if progress:
        progress(0.95, f"Measuring the embedding rows of {source}")
    _precompute_embedding_norms(lm)
    if progress:
        progress(1.0, f"{source} loaded")
    lm.load_seconds = time.perf_counter() - started
    return lm


def load_remote(source: str, remote, *, ndif_key: str | None = None, ndif_repo_id: str | None = None,
                token: str | None = None, dtype=None, progress=None, **local) -> LoadedModel:
    """`source` for `remote` (True, a URL, "local"; core.remote.connection): a RemoteLoadedModel.

    The remote= value and the key are checked first, before anything is read or downloaded.
    "local": the weights are loaded as load_model does (the keyword arguments in `local`), and
    nnsight wraps that module. True / a URL: only config.json and the tokenizer files are read
    (downloaded from the hub for a hub id, without weights), the architecture is built on the meta
    device, and the requests name the model by `ndif_repo_id`, else the hub id of the source
    (a preset's, a typed one's, or that of a folder inside the Hugging Face cache).
    """
    target = resolve_target(remote, ndif_key)
    if target.is_simulation:
        lm = load_model(source, dtype=dtype, token=token, progress=progress, **local)
        return remote_model(lm, remote, key=ndif_key, repo_id=ndif_repo_id)
    try:
        resolved = resolve_source(source)
    except SourceError as error:
        raise ModelLoadError(str(error)) from None
    if resolved.is_gguf:
        raise RemoteError(f"{source} is a GGUF file converted here: NDIF runs models from the Hugging Face hub. "
                          "Pick the model's hub id, or run it locally.")
    if resolved.kind == "folder":
        folder, repo_id = Path(resolved.location), ndif_repo_id or repo_id_of_folder(resolved.location)
    else:
        if progress:
            progress(0.1, f"Downloading the config and tokenizer of {resolved.location} (no weights)")
        folder, repo_id = _hub_files(resolved.location, token), ndif_repo_id or resolved.location
    lm = load_model(str(folder), dtype=dtype, weights=False)  # config + tokenizer on the meta device
    lm.name, lm.source = source, resolved
    return remote_model(lm, remote, key=ndif_key, repo_id=repo_id)


def _hub_files(repo_id: str, token: str | None) -> Path:
    """The hub snapshot of `repo_id` with its config and tokenizer files only."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=REMOTE_HUB_FILES, token=resolve_token(token)))
    except Exception as error:  # every hub/network failure becomes one readable message
        raise ModelLoadError(hub_error_message(error, repo_id)) from None


def _precompute_embedding_norms(lm: LoadedModel) -> None:
    """Compute the embedding table's inverse row norms now, while loading.

    Why here: nearest tokens, arithmetic and the word map all need 1/|E[i]| for the whole table.
    Computed inside the first query, it doubles that query's cost (two passes over the table
    instead of one: 3x the bandwidth bound instead of 1.9x for Llama 3.2 3B's table, bench/
    real_shapes.py). At load it is one more pass over weights that were just read (0.06-0.1 s
    for a 3-4 B model). A model without a readable table loads anyway; the pages that need the
    table say why.
    """
    try:
        inverse_norms(lm)  # kept in core.model.reading's per-model cache
    except ModelLoadError:
        pass


def _require_safetensors(folder: Path, source: str) -> None:
    if not list(folder.glob("*.safetensors")):
        other = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        hint = " (it has only pickle weights, which are not loaded for safety)" if other else ""
        raise ModelLoadError(f"{source}: no .safetensors weights in {folder}{hint}.")


def _shipped_config(source: Source):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source.shipped_config)


def preset_names() -> list[str]:
    return list(PRESETS)
