"""Device names checked before use: one helper for every verb and library entry point.

A device is named by a string ("auto", "cpu", "cuda", "cuda:1", "mps"). :func:`check_device`
refuses a name torch does not know, or a device this machine does not have, with one line naming
the value given, before any image is read or any file written; left to torch, the same mistakes
surface half-way through a job as a driver traceback. :func:`check_accelerator` does the same for
Lightning's ``accelerator``/``devices`` pair.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""The device names lookalike accepts, as error messages list them."""

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
"""Lightning accelerators lookalike trains on."""


def check_device(device: str | torch.device, *, allow_auto: bool = True) -> str:
    """Refuse a device that is unknown or absent on this machine.

    Args:
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N" or "mps".
        allow_auto: Whether "auto" is a valid answer where this device is used.

    Returns:
        ``device`` as a string, unchanged.

    Raises:
        ValueError: One line naming the device given and what this machine has.
    """
    name = str(device).strip()
    valid = [n for n in DEVICE_NAMES if allow_auto or n != "auto"]
    if name == "auto":
        if not allow_auto:
            raise ValueError(f"device 'auto' is not accepted here; use one of {', '.join(valid)}")
        return name
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use one of {', '.join(valid)}") from None
    if parsed.type == "cpu":
        return name
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {name!r} requested but this machine has no usable CUDA device "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return name
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} requested but MPS is not available; use cpu")
        return name
    raise ValueError(f"unsupported device {name!r}; use one of {', '.join(valid)}")


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device a model runs on: ``"auto"`` becomes CUDA when this machine has it, else
    the CPU; any other name is checked (:func:`check_device`) and returned as a torch device.

    Raises:
        ValueError: One line naming the device given and what this machine has.
    """
    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_accelerator(accelerator: str, devices: Any = "auto") -> None:
    """Refuse a Lightning ``accelerator``/``devices`` pair this machine cannot run.

    Args:
        accelerator: "auto", "cpu", "gpu", "cuda" or "mps".
        devices: "auto", a count, or a list of device indices (Lightning's ``devices``).

    Raises:
        ValueError: One line naming the setting and the value given.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"unknown trainer.accelerator {accelerator!r}; valid: {', '.join(ACCELERATORS)}"
        )
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ValueError(
                f"trainer.accelerator={accelerator!r} needs CUDA but this machine has no usable "
                "CUDA device; use trainer.accelerator=cpu (or auto)"
            )
        wanted = _device_indices(devices)
        if wanted and max(wanted) >= available:
            raise ValueError(
                f"trainer.devices={devices!r} asks for CUDA device {max(wanted)} but this machine "
                f"has {available} (0 to {available - 1})"
            )
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise ValueError("trainer.accelerator='mps' but MPS is not available; use cpu (or auto)")


def _device_indices(devices: Any) -> list[int]:
    """The CUDA device indices ``devices`` needs: a count n → 0..n-1, a list as given."""
    if devices in (None, "auto", -1, "-1"):
        return []
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    text = str(devices).strip()
    if "," in text:
        return [int(d) for d in text.split(",") if d.strip()]
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"trainer.devices must be auto, a count >= 1 or a list, got {devices!r}")
    return list(range(count))


def free_cached_gpu_memory() -> int:
    """Give the CUDA caching allocator's unused blocks back to the driver between phases of a
    job (training, validation, test evaluation, export), so the next phase, or another process
    on the GPU, can use them. Nothing happens without CUDA.

    Returns:
        Bytes released (reserved before minus reserved after), 0 without CUDA.
    """
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    gc.collect()  # tensors only cyclic garbage still holds keep their blocks reserved
    before = torch.cuda.memory_reserved()
    torch.cuda.empty_cache()
    return max(0, before - torch.cuda.memory_reserved())
