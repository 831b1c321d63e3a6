"""Where a model's weights go: GPUs, then CPU RAM, then disk — planned before loading.

The plan is accelerate's big-model inference (Hugging Face, "Handling big models
for inference"): `get_balanced_memory` spreads layers evenly over several GPUs,
`infer_auto_device_map` fills GPUs first, then CPU RAM, then disk, never splitting
a decoder layer (`_no_split_modules`). We compute that device map on the meta-device
model, show it, and pass the very same map to `from_pretrained(device_map=...)`,
so what the user was shown is what gets loaded. accelerate's hooks then move each
layer's weights to the execution device just before it runs: layers in CPU RAM
cross the PCIe bus on every forward pass, layers on disk are read from disk
(safetensors memory maps, or `offload_folder` when the dtype changes).

Cost of offloading, per forward pass: every offloaded byte is read once. The
estimate divides the bytes on disk by a measured sequential read speed (uncached
read of the weights file; a typical NVMe figure when nothing can be measured), and
the bytes in CPU RAM by a typical PCIe 4.0 x16 rate when a GPU executes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from core.model.errors import ModelLoadError
from core.loading.sources import cache_dir

GIB = 1024**3
MEMORY_HEADROOM = 1.15  # weights + activations/fragmentation margin on every device
PLACEMENTS = ("auto", "gpu", "cpu", "disk")  # what the user can ask for
TYPICAL_DISK_BYTES_PER_S = 1.5e9  # NVMe SSD sequential read, when nothing can be measured
TYPICAL_PCIE_BYTES_PER_S = 12e9  # CPU RAM -> GPU over PCIe 4.0 x16, in practice
DISK_PROBE_BYTES = 64 * 2**20  # read this much of a weights file to measure the disk


class PlacementError(RuntimeError):
    """Even GPUs + CPU RAM + disk cannot hold the model; the message is for the user."""


@dataclass(frozen=True)
class Plan:
    """A device map and what it costs. `device_map` maps module names to 0, 1, …, "mps", "cpu" or "disk"."""

    placement: str  # what was asked: auto / gpu / cpu / disk
    device_map: dict  # {module name: device}; {"": "cpu"} means the whole model on the CPU
    bytes_on: dict  # {"cuda:0" | "mps" | "cpu" | "disk": weight bytes}
    execution_device: str  # where the computation runs (the first GPU, mps, else cpu)
    disk_bytes_per_s: float
    disk_speed_measured: bool
    limits: dict = field(default_factory=dict)  # the max_memory the plan was made with

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_on.values())

    @property
    def is_dispatched(self) -> bool:
        """Spread over more than one place: accelerate's hooks move weights during the forward pass."""
        return len(self.bytes_on) > 1 or "disk" in self.bytes_on

    @property
    def offloaded_seconds_per_forward(self) -> float:
        """Time spent only moving offloaded weights, per forward pass (estimate)."""
        seconds = self.bytes_on.get("disk", 0) / self.disk_bytes_per_s
        if self.execution_device not in ("cpu", "mps"):
            seconds += self.bytes_on.get("cpu", 0) / TYPICAL_PCIE_BYTES_PER_S
        return seconds

    def describe(self) -> str:
        """The plan in plain words: how many GiB go where, and how slow offloading will be."""
        names = {"cpu": "CPU RAM", "disk": "disk", "mps": "Apple GPU (mps)"}
        parts = [f"{size_text(size)} on {names.get(place, 'GPU ' + place.removeprefix('cuda:'))}"
                 for place, size in self.bytes_on.items()]
        text = "Weights: " + ", ".join(parts) + f"; it runs on {self.execution_device}."
        if self.bytes_on.get("disk"):
            how = "measured" if self.disk_speed_measured else "typical"
            text += (f" Offloaded to disk: each forward pass reads {size_text(self.bytes_on['disk'])} at "
                     f"{self.disk_bytes_per_s / 1e9:.1f} GB/s ({how}), about "
                     f"{self.offloaded_seconds_per_forward:.2g} s extra per prompt.")
        elif self.execution_device not in ("cpu", "mps") and self.bytes_on.get("cpu"):
            text += (f" Layers in CPU RAM cross to the GPU on every forward pass: about "
                     f"{self.offloaded_seconds_per_forward:.2f} s extra per prompt.")
        return text


def size_text(nbytes: float) -> str:
    """Bytes for people: GiB from 1 GiB up, MiB from 1 MiB up, else bytes."""
    if nbytes >= GIB:
        return f"{nbytes / GIB:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{int(nbytes):,} B"


# ---------------------------------------------------------------- memory on each device


def free_ram_bytes() -> int:
    return int(psutil.virtual_memory().available)


def free_disk_bytes(folder: Path | str | None = None) -> int:
    return int(shutil.disk_usage(folder or tempfile.gettempdir()).free)


def gpu_free_bytes() -> dict[int, int]:
    """Free bytes on each CUDA GPU (none without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def default_max_memory(placement: str, ram_bytes: int | None = None) -> dict:
    """accelerate's max_memory for a placement, from what is free now (with headroom).

    Apple's mps shares the machine's RAM with the CPU, so it gets the RAM budget and
    there is no separate CPU tier (counting both would count the same memory twice).
    """
    ram = int((ram_bytes if ram_bytes is not None else free_ram_bytes()) / MEMORY_HEADROOM)
    gpus = {i: int(free / MEMORY_HEADROOM) for i, free in gpu_free_bytes().items()}
    if placement == "cpu":
        return {"cpu": ram}
    if placement == "gpu":
        if gpus:
            return {0: gpus[0]}
        if mps_available():
            return {"mps": ram}
        raise PlacementError("was to go on the GPU ('GPU only'), but torch sees no GPU on this machine "
                             "(no CUDA device, no Apple mps). Choose 'auto' or 'CPU only'.")
    if placement == "disk":  # keep only what must stay resident in memory; every layer goes to disk
        return {**({0: 1} if gpus else {}), "cpu": 1}
    if gpus:
        return {**gpus, "cpu": ram}
    return {"mps": ram} if mps_available() else {"cpu": ram}


def _place_name(device) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _execution_device(max_memory: dict) -> str:
    for device in max_memory:
        if device not in ("cpu", "disk"):
            return _place_name(device)
    return "cpu"


# ---------------------------------------------------------------- the plan


def plan_placement(meta_model: torch.nn.Module, dtype: torch.dtype, placement: str = "auto",
                   max_memory: dict | None = None, disk_free: int | None = None,
                   weights_file: Path | None = None, ram_bytes: int | None = None) -> Plan:
    """accelerate's device map for `meta_model` in `dtype`, and what it costs.

    `max_memory` overrides the free-memory reading ({0: bytes, "cpu": bytes}, as accelerate takes it).
    Raises PlacementError when the placement cannot hold the model: "cpu"/"gpu" refuse anything that
    spills, "auto"/"disk" refuse only when the disk has no room either.
    """
    from accelerate.utils import compute_module_sizes, get_balanced_memory, infer_auto_device_map

    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
    limits = dict(max_memory) if max_memory is not None else default_max_memory(placement, ram_bytes)
    no_split = list(getattr(meta_model, "_no_split_modules", None) or [])
    budget = limits
    if sum(isinstance(d, int) for d in limits) > 1:  # several GPUs: balance the layers over them
        budget = get_balanced_memory(meta_model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype)
    device_map = dict(infer_auto_device_map(meta_model, max_memory=budget, no_split_module_classes=no_split,
                                            dtype=dtype))
    sizes = compute_module_sizes(meta_model, dtype=dtype)
    bytes_on: dict[str, int] = {}
    for name, device in device_map.items():
        place = _place_name(device)
        bytes_on[place] = bytes_on.get(place, 0) + int(sizes[name])
    speed, measured = disk_read_speed(weights_file) if bytes_on.get("disk") else (TYPICAL_DISK_BYTES_PER_S, False)
    plan = Plan(placement, device_map, bytes_on, _execution_device(limits), speed, measured, limits)
    _check(plan, placement, disk_free)
    return plan


def _check(plan: Plan, placement: str, disk_free: int | None) -> None:
    needed = size_text(plan.total_bytes)
    if placement in ("cpu", "gpu") and set(plan.bytes_on) - {plan.execution_device}:
        where = "the GPU" if placement == "gpu" else "CPU RAM"
        free = sum(v for k, v in plan.limits.items() if k != "disk") * MEMORY_HEADROOM
        raise PlacementError(
            f"needs about {needed}, but only {size_text(free)} of memory is free in {where}. Choose 'auto' "
            "or 'offload to disk' in the sidebar, pick bfloat16, or unload the other model first."
        )
    on_disk = plan.bytes_on.get("disk", 0)
    free_disk = disk_free if disk_free is not None else free_disk_bytes()
    if on_disk > free_disk:
        memory = sum(v for k, v in plan.bytes_on.items() if k != "disk")
        raise PlacementError(
            f"is too big even with offloading: it needs about {needed}; memory holds {size_text(memory)} "
            f"and the disk has only {size_text(free_disk)} free for the other {size_text(on_disk)}."
        )


def disk_read_speed(weights_file: Path | None) -> tuple[float, bool]:
    """(bytes per second, measured?) for an uncached sequential read of `weights_file`.

    The page cache is dropped for the probed range first (posix_fadvise DONTNEED), so the
    figure is the disk's, not RAM's. Falls back to a typical NVMe speed.
    """
    if weights_file is None or not Path(weights_file).is_file() or not hasattr(os, "posix_fadvise"):
        return TYPICAL_DISK_BYTES_PER_S, False
    size = min(Path(weights_file).stat().st_size, DISK_PROBE_BYTES)
    if size < 4 * 2**20:  # too small to time meaningfully
        return TYPICAL_DISK_BYTES_PER_S, False
    fd = os.open(weights_file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
        started, done = time.perf_counter(), 0
        while done < size:
            chunk = os.read(fd, min(8 * 2**20, size - done))
            if not chunk:
                break
            done += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    return (done / elapsed, True) if elapsed > 0 and done else (TYPICAL_DISK_BYTES_PER_S, False)


# ---------------------------------------------------------------- loading as planned


def fit_check(meta, dtype, placement, max_memory, available_bytes, folder, offload_folder, source):
    """The fit check: accelerate's device map for this model, or a message when nothing can hold it."""
    biggest = max(folder.glob("*.safetensors"), key=lambda p: p.stat().st_size)
    try:
        return plan_placement(meta, dtype, placement, max_memory=max_memory, ram_bytes=available_bytes,
                              disk_free=free_disk_bytes(offload_folder or _offload_root()), weights_file=biggest)
    except PlacementError as error:
        raise ModelLoadError(f"{source} {error}") from None


def _offload_root() -> Path:
    root = cache_dir() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    return root


def load_weights(folder: Path, dtype: torch.dtype, device: str, name: str, plan=None,
                 offload_folder: str | Path | None = None) -> torch.nn.Module:
    """Read the safetensors weights: onto `device`, or placed as `plan` says (accelerate dispatch)."""
    from transformers import AutoModelForCausalLM

    placed = {}
    temporary = None
    if plan is not None and plan.device_map != {"": "cpu"}:
        placed["device_map"] = plan.device_map
        if "disk" in plan.bytes_on:
            if offload_folder is None:
                offload_folder = temporary = tempfile.mkdtemp(prefix="weights-", dir=_offload_root())
            placed["offload_folder"] = str(offload_folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            attn_implementation="eager",  # sdpa returns no attention weights
            use_safetensors=True,
            trust_remote_code=False,
            **placed,
        )
        if not placed:
            model = model.to(device)
    except torch.OutOfMemoryError:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise ModelLoadError(
            f"{name}: the GPU ran out of memory while loading the weights. Choose 'auto' or 'offload to disk' "
            "in the sidebar, pick bfloat16, or unload the other model first."
        ) from None
    except Exception as error:  # corrupt or truncated files surface as many exception types
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
        raise ModelLoadError(
            f"{name}: the weights in {folder} could not be read (corrupt or incomplete safetensors file?). "
            f"Details: {type(error).__name__}: {str(error)[:200]}"
        ) from None
    if temporary:  # rewritten offloaded weights live as long as the model
        weakref.finalize(model, shutil.rmtree, temporary, True)
    model.eval()
    model.requires_grad_(False)
    touch_cpu_weights(model)
    return model


@torch.no_grad()
def touch_cpu_weights(model: torch.nn.Module) -> None:
    """Read one value of every memory page of the weights held in CPU RAM.

    transformers maps safetensors files into memory lazily, so without this the first page a
    visitor opens pays the page faults of the whole model (Gemma-3-4B shape, 12 tokens on an idle
    2-core machine: first trace 8.5 s vs 5.4 s warm; touched at load: 0.5 s here, first trace 6.3 s).
    The load has a progress bar; the first page should not. Offloaded (meta) and GPU weights are skipped.
    """
    seen = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen or tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        seen.add(id(tensor))
        flat = tensor.reshape(-1)
        flat[:: max(1, 4096 // flat.element_size())].float().sum()  # one element per 4 KiB page
