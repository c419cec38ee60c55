"""Where an index lives: ``"auto"`` resolved to a GPU only when the index can run there.

FAISS indexes need FAISS built with GPU support (``faiss-gpu-cu12``) and a visible GPU; FAISS has
no GPU HNSW; the exact torch index needs only torch's CUDA. ``"cpu"`` and ``"cuda[:N]"`` are taken
as given and checked where the index is built, which fails with one line saying what is missing.
"""

from __future__ import annotations

import torch

from lookalike.index.base import INDEXES, check_device
from lookalike.index.faiss_index import faiss_gpu_available

INDEX_DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_index_device(device: str, kind: str) -> str:
    """``device`` for an index of ``kind``: ``"auto"`` becomes ``"cuda"`` where that index runs
    on this machine's GPU, else ``"cpu"``; any other name is returned unchanged.

    Raises:
        ValueError: ``kind`` is not a registered index (the valid names are listed).
    """
    factory = INDEXES.get(kind)
    name = str(device).strip()
    if name != "auto":
        return name
    if not torch.cuda.is_available():
        return "cpu"
    if getattr(factory, "supports_gpu", None) is False:
        return "cpu"
    if hasattr(factory, "supports_gpu"):  # a FAISS index
        return "cuda" if faiss_gpu_available() else "cpu"
    return "cuda"


def check_index_device(device: str, kind: str) -> str:
    """Refuse a device an index of ``kind`` cannot live on here, before anything is built.

    Returns:
        The resolved device (``"auto"`` resolved, see :func:`resolve_index_device`).

    Raises:
        ValueError: One line: an unknown or absent device, a GPU for an index FAISS has no GPU
            version of (HNSW), or a GPU without FAISS GPU support (``pip install faiss-gpu-cu12``).
    """
    resolved = resolve_index_device(device, kind)
    check_device(resolved)
    if resolved == "cpu":
        return resolved
    supports_gpu = getattr(INDEXES.get(kind), "supports_gpu", None)
    if supports_gpu is False:
        raise ValueError(
            f"FAISS has no GPU version of the {kind!r} index; use --device cpu, or a flat or IVF "
            "index on the GPU"
        )
    if supports_gpu and not faiss_gpu_available():
        raise ValueError(
            f"device {resolved!r} for a {kind!r} index needs FAISS built with GPU support and a "
            "visible GPU, but this FAISS has none (pip install faiss-gpu-cu12, or lookalike[gpu]); "
            "use --device cpu"
        )
    return resolved
