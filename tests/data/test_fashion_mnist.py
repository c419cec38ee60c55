"""Tests for lookalike.data.fashion_mnist: the IDX reader against bytes the test packs itself, the
PNG export against the arrays it came from, and the real Debian files where installed."""

from __future__ import annotations

import gzip
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.data.fashion_mnist import (
    COMPLETE_MARKER,
    DEFAULT_SOURCE_DIR,
    FASHION_MNIST_CLASSES,
    export_fashion_mnist,
    first_per_class,
    read_idx,
)
from lookalike.data.sources import folder_source


def _idx_bytes(type_code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_read_idx_uint8_gzipped_and_raw(tmp_path: Path) -> None:
    values = list(range(2 * 3 * 4))
    data = _idx_bytes(0x08, (2, 3, 4), bytes(values))
    (tmp_path / "raw-idx3-ubyte").write_bytes(data)
    (tmp_path / "gz-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    for name in ("raw-idx3-ubyte", "gz-idx3-ubyte.gz"):
        array = read_idx(tmp_path / name)
        assert array.dtype == np.uint8 and array.shape == (2, 3, 4)
        assert array[1, 2, 3] == values[1 * 12 + 2 * 4 + 3]
        assert array.ravel().tolist() == values


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    ints = [1, -2, 70000]
    (tmp_path / "i4").write_bytes(_idx_bytes(0x0C, (3,), struct.pack(">3i", *ints)))
    array = read_idx(tmp_path / "i4")
    assert array.tolist() == ints and array.dtype.isnative
    floats = [0.5, -1.25]
    (tmp_path / "f4").write_bytes(_idx_bytes(0x0D, (1, 2), struct.pack(">2f", *floats)))
    assert read_idx(tmp_path / "f4").tolist() == [floats]
    (tmp_path / "i2").write_bytes(_idx_bytes(0x0B, (2,), struct.pack(">2h", -300, 300)))
    assert read_idx(tmp_path / "i2").tolist() == [-300, 300]


def test_read_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")
    (tmp_path / "short").write_bytes(_idx_bytes(0x08, (2, 2), bytes(3)))
    with pytest.raises(ValueError, match=r"holds 3 bytes, header shape \(2, 2\) needs 4"):
        read_idx(tmp_path / "short")


def test_first_per_class() -> None:
    labels = np.array([2, 0, 2, 2, 1, 0, 2])
    assert first_per_class(labels, 2).tolist() == [0, 1, 2, 4, 5]
    assert first_per_class(labels, None).tolist() == list(range(7))


def _write_fake_release(folder: Path, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True)
    files = {"t10k-images-idx3-ubyte.gz": images, "t10k-labels-idx1-ubyte.gz": labels}
    for name, array in files.items():
        (folder / name).write_bytes(gzip.compress(_idx_bytes(0x08, array.shape, array.tobytes())))
    return images, labels


def test_export_writes_first_images_per_class(tmp_path: Path) -> None:
    images, labels = _write_fake_release(tmp_path / "release")
    release = tmp_path / "release"
    folder = export_fashion_mnist(tmp_path / "out", "test", limit_per_class=2, source_dir=release)
    assert folder == tmp_path / "out" / "test_first2"
    expected = []
    for class_index, name in enumerate(FASHION_MNIST_CLASSES):
        positions = [i for i in range(len(labels)) if labels[i] == class_index][:2]
        expected += [f"{name}/{i:05d}.png" for i in positions]
        for i in positions:
            assert np.array_equal(np.asarray(Image.open(folder / name / f"{i:05d}.png")), images[i])
    exported = folder_source(folder)
    assert sorted(exported.ids) == sorted(expected)
    assert all(r.label == r.id.split("/")[0] for r in exported.records)
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["images"] == 20 and set(marker["per_class"].values()) == {2}
    assert not list(folder.rglob("*.tmp"))


def test_export_skips_complete_and_resumes_partial(tmp_path: Path) -> None:
    images, _ = _write_fake_release(tmp_path / "release")
    folder = export_fashion_mnist(tmp_path / "out", source_dir=tmp_path / "release")
    assert folder == tmp_path / "out" / "test" and len(folder_source(folder)) == len(images)
    victim = next(folder.rglob("*.png"))
    victim.unlink()
    export_fashion_mnist(tmp_path / "out", source_dir=tmp_path / "release")
    assert not victim.exists()  # the marker says complete: nothing is rewritten
    (folder / COMPLETE_MARKER).unlink()
    export_fashion_mnist(tmp_path / "out", source_dir=tmp_path / "release")
    assert victim.exists() and (folder / COMPLETE_MARKER).is_file()


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        export_fashion_mnist(tmp_path / "out", source_dir=tmp_path / "absent")
    with pytest.raises(ValueError, match="valid names: test, train"):
        export_fashion_mnist(tmp_path / "out", split="val")
    with pytest.raises(ValueError, match="limit_per_class"):
        export_fashion_mnist(tmp_path / "out", limit_per_class=0)
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks t10k-images-idx3-ubyte.gz"):
        export_fashion_mnist(tmp_path / "out", source_dir=tmp_path / "partial")


def test_export_download_goes_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    labels = np.arange(20) % 10

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            self.data = np.full((20, 28, 28), 9, dtype=np.uint8)
            self.targets = labels

    datasets = types.ModuleType("torchvision.datasets")
    datasets.FashionMNIST = FakeFashionMNIST  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    folder = export_fashion_mnist(
        tmp_path / "out", "train", source_dir=tmp_path / "absent", download=True
    )
    assert calls == [(str(tmp_path / "out" / ".download"), True, True)]
    assert len(folder_source(folder)) == 20


@pytest.mark.skipif(
    not DEFAULT_SOURCE_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_debian_release(tmp_path: Path) -> None:
    test_labels = read_idx(DEFAULT_SOURCE_DIR / "t10k-labels-idx1-ubyte.gz")
    train_labels = read_idx(DEFAULT_SOURCE_DIR / "train-labels-idx1-ubyte.gz")
    # Xiao et al. (2017): 10,000 test and 60,000 train images, balanced over the 10 classes.
    assert np.bincount(test_labels).tolist() == [1000] * 10
    assert np.bincount(train_labels).tolist() == [6000] * 10
    folder = export_fashion_mnist(tmp_path, "test", limit_per_class=3)
    exported = folder_source(folder)
    assert len(exported) == 30 and sorted(set(exported.labels)) == sorted(FASHION_MNIST_CLASSES)
    images = read_idx(DEFAULT_SOURCE_DIR / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    first = exported.records[0]
    index = int(Path(first.id).stem)
    assert FASHION_MNIST_CLASSES[test_labels[index]] == first.label
    assert np.array_equal(np.asarray(Image.open(first.path)), images[index])
