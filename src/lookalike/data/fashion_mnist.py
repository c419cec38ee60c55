"""Fashion-MNIST as a folder of PNGs, the small real data set for demos and smoke tests.

Fashion-MNIST (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747, 2017) has 60,000 train and 10,000 test 28x28
grey images of 10 clothing classes, shipped as gzipped IDX files. Debian's
``dataset-fashion-mnist`` package installs them under ``/usr/share/datasets/fashion-mnist``;
:func:`export_fashion_mnist` turns one split into the folder-per-class tree that
:func:`lookalike.data.sources.folder_source` reads.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.utils.atomic import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)
"""Class folder names, indexed by the IDX label (0-9)."""

DEFAULT_SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""Image and label files of each split, as named by the original release and by Debian."""

COMPLETE_MARKER = ".export_complete.json"
"""Written last into an export folder; its presence means the export is whole."""

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian uint32
    sizes; the data follow big-endian in C order.

    Returns:
        An array of the stored shape (e.g. ``(N, 28, 28)`` uint8 images, ``(N,)`` uint8 labels) in
        native byte order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The header is not IDX or the data size does not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: IDX header truncated")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: IDX data holds {len(raw) - header_size} bytes, "
            f"header shape {shape} needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _load_debian(source_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = (source_dir / name for name in IDX_FILES[split])
    missing = [p.name for p in (images_file, labels_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source_dir} lacks {', '.join(missing)}; reinstall dataset-fashion-mnist"
        )
    return read_idx(images_file), read_idx(labels_file)


def _load_torchvision(cache_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import FashionMNIST

    dataset = FashionMNIST(root=str(cache_dir), train=split == "train", download=True)
    return np.asarray(dataset.data, dtype=np.uint8), np.asarray(dataset.targets, dtype=np.int64)


def first_per_class(labels: np.ndarray, limit_per_class: int | None) -> np.ndarray:
    """Indices of the first ``limit_per_class`` images of every class in file order (all when None).

    Args:
        labels: ``(N,)`` integer class labels.
        limit_per_class: Positive cap per class, or ``None`` for no cap.

    Returns:
        ``(M,)`` ascending int64 indices into ``labels``.
    """
    if limit_per_class is None:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members))
    return np.flatnonzero(rank < limit_per_class)


def export_fashion_mnist(
    output_root: str | os.PathLike[str],
    split: str = "test",
    limit_per_class: int | None = None,
    source_dir: str | os.PathLike[str] = DEFAULT_SOURCE_DIR,
    download: bool = False,
) -> Path:
    """Write one Fashion-MNIST split as ``<folder>/<class name>/<index>.png``.

    ``<folder>`` is ``output_root/<split>`` for the whole split and
    ``output_root/<split>_first<N>`` with ``limit_per_class=N`` (the first ``N`` images of each
    class in file order); ``<index>`` is the image's 5-digit position in the IDX file. Each PNG
    is written atomically and the marker :data:`COMPLETE_MARKER` last, so an interrupted export
    resumes where it stopped and a complete one returns at once.

    Args:
        output_root: Folder receiving the export.
        split: ``"test"`` (10,000 images) or ``"train"`` (60,000 images).
        limit_per_class: Keep only the first this many images of each class.
        source_dir: Folder holding the gzipped IDX files (Debian's ``dataset-fashion-mnist``).
        download: Where ``source_dir`` is absent, download through
            ``torchvision.datasets.FashionMNIST`` into ``output_root/.download`` (needs internet).

    Returns:
        The export folder, ready for :func:`lookalike.data.sources.folder_source`.

    Raises:
        ValueError: Unknown ``split`` or a non-positive ``limit_per_class``.
        FileNotFoundError: No source files and ``download`` is False.
    """
    if split not in IDX_FILES:
        raise ValueError(
            f"unknown Fashion-MNIST split {split!r}; valid names: {', '.join(sorted(IDX_FILES))}"
        )
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(
            f"limit_per_class must be a positive integer or None, got {limit_per_class}"
        )
    output_root = Path(output_root)
    folder = output_root / (split if limit_per_class is None else f"{split}_first{limit_per_class}")
    if (folder / COMPLETE_MARKER).is_file():
        logger.info("Fashion-MNIST %s already exported to %s", split, folder)
        return folder
    source_dir = Path(source_dir)
    if source_dir.is_dir():
        images, labels = _load_debian(source_dir, split)
    elif download:
        images, labels = _load_torchvision(output_root / ".download", split)
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {source_dir}; run "
            "`apt-get install dataset-fashion-mnist` or pass download=True (downloads through "
            "torchvision)"
        )
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST {split}: {images.shape} images do not match {labels.shape} labels"
        )
    if labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(
            f"Fashion-MNIST {split}: labels outside 0-{len(FASHION_MNIST_CLASSES) - 1}"
        )
    chosen = first_per_class(labels, limit_per_class)
    written = 0
    for index in chosen:
        target = folder / FASHION_MNIST_CLASSES[labels[index]] / f"{index:05d}.png"
        if target.is_file():
            continue
        with atomic_path(target) as tmp:
            pixels = np.ascontiguousarray(images[index], dtype=np.uint8)
            Image.fromarray(pixels).save(tmp, format="PNG")
        written += 1
    counts = np.bincount(labels[chosen], minlength=len(FASHION_MNIST_CLASSES))
    atomic_write_json(
        folder / COMPLETE_MARKER,
        {
            "dataset": "fashion-mnist",
            "split": split,
            "limit_per_class": limit_per_class,
            "images": len(chosen),
            "per_class": {name: int(c) for name, c in zip(FASHION_MNIST_CLASSES, counts)},
        },
    )
    logger.info(
        "exported %d Fashion-MNIST %s images (%d new) to %s", len(chosen), split, written, folder
    )
    return folder
