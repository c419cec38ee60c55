"""Embedding throughput: a plain PyTorch loop against lookalike's PyTorch path and ONNX Runtime.

Measured in one run, on the same images and model, end to end (JPEG decoding included):

- **plain PyTorch loop** (the baseline): what people write by hand, a ``Dataset`` that opens each
  file with PIL and applies the eval transform in the main process (no workers), fp32, NCHW,
  ``torch.no_grad`` and ``model(batch)``;
- **lookalike, PyTorch**: ``embed_image_set`` with its defaults (core budget between decoding
  workers and intra-op threads, JPEG draft decoding, channels-last, ``inference_mode``);
- **lookalike, ONNX Runtime fp32**: the same call with the model exported by ``export_model``
  (parity-checked against PyTorch);
- **lookalike, ONNX Runtime int8**: that export quantised statically (QDQ, per-channel,
  calibrated on the images themselves).

Two image sets: the images given (e.g. Caltech-101's ~300x200 JPEGs) and copies of them
upscaled to about 3 Mpx (2000x1500), where decoding dominates a plain loop. For each it prints
images/s, the ratio to the plain loop (> 1: faster), and how far each path's embeddings are from
the plain loop's (max |difference| for fp32, smallest cosine for int8).

    python benchmarks/embed_throughput.py [--images DIR] [--n 128] [--large-n 32] \
        [--batch-size 32] [--repeats 1]

Without ``--images`` it writes ``--n`` random 320x240 JPEGs to a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _images import write_random_jpegs
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.extract import EmbedderLike, embed_image_set
from lookalike.models import Embedder, create_embedder
from lookalike.models.onnx import ONNX_FILE, OnnxEmbedder, read_onnx_info
from lookalike.models.onnx.quantize import quantize_int8
from lookalike.models.preprocessing import eval_transform
from lookalike.pipeline.export import export_model

LARGE_SIZE = (2000, 1500)


class PlainImages(Dataset):
    """Files opened with PIL and transformed: the hand-written baseline."""

    def __init__(self, paths: list[Path], transform: object) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))  # type: ignore[operator]


def plain_loop(model: Embedder, images: ImageSet, batch_size: int) -> np.ndarray:
    loader = DataLoader(PlainImages(images.paths, model.eval_transform()), batch_size=batch_size)
    parts = []
    with torch.no_grad():
        for batch in loader:
            parts.append(model(batch).numpy())
    return np.concatenate(parts)


def lookalike_path(embedder: EmbedderLike, batch_size: int) -> Callable[[ImageSet], np.ndarray]:
    def run(images: ImageSet) -> np.ndarray:
        return embed_image_set(embedder, images, batch_size=batch_size, device="cpu").embeddings

    return run


def spread(images: ImageSet, n: int) -> ImageSet:
    """``n`` images spread evenly over the (class-sorted) set."""
    rows = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    return images.select(rows.tolist())


def large_copies(images: ImageSet, folder: Path) -> ImageSet:
    """Each image upscaled to :data:`LARGE_SIZE` and saved as a JPEG (quality 90)."""
    for i, record in enumerate(images):
        target = folder / str(record.label) / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(record.path) as image:
            image.convert("RGB").resize(LARGE_SIZE, Image.Resampling.BICUBIC).save(target, quality=90)
    return load_source(folder)


def onnx_models(model: Embedder, calibration: ImageSet, folder: Path, batch_size: int) -> tuple[OnnxEmbedder, OnnxEmbedder]:
    """The checked fp32 export, and its static int8 quantisation calibrated on ``calibration``."""
    export_model(model, folder / "fp32", sample_size=8)
    info = read_onnx_info(folder / "fp32")
    transform = eval_transform(model.preprocessing)
    batches = (
        torch.stack([transform(Image.open(p).convert("RGB")) for p in calibration.paths[i : i + batch_size]]).numpy()
        for i in range(0, len(calibration), batch_size)
    )
    quantize_int8(folder / "fp32" / ONNX_FILE, folder / "int8.onnx", calibration_batches=batches)
    return (
        OnnxEmbedder(folder / "fp32" / ONNX_FILE, info),
        OnnxEmbedder(folder / "int8.onnx", {**info, "precision": "int8"}),
    )


def measure(paths: dict[str, Callable[[ImageSet], np.ndarray]], images: ImageSet, repeats: int) -> dict[str, tuple[float, np.ndarray]]:
    """Median images/s of each path over ``repeats`` interleaved rounds, and its embeddings."""
    warm = spread(images, 8)
    for run in paths.values():
        run(warm)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in paths.items():
            start = time.perf_counter()
            outputs[name] = run(images)
            seconds[name].append(time.perf_counter() - start)
    return {name: (len(images) / statistics.median(seconds[name]), outputs[name]) for name in paths}


def report(title: str, results: dict[str, tuple[float, np.ndarray]]) -> None:
    baseline_rate, baseline = results["plain PyTorch loop"]
    print(f"\n{title}")
    print(f"{'path':<28}{'images/s':>10}{'vs plain':>10}   agreement with the plain loop")
    for name, (rate, embeddings) in results.items():
        if "int8" in name:
            unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
            agreement = f"min cosine {float((unit * baseline).sum(axis=1).min()):.4f}"
        else:
            agreement = f"max |diff| {float(np.abs(embeddings - baseline).max()):.1e}"
        print(f"{name:<28}{rate:>10.1f}{rate / baseline_rate:>9.2f}x   {agreement}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="A folder per class (default: random JPEGs)")
    parser.add_argument("--n", type=int, default=128, help="Images of the first set")
    parser.add_argument("--large-n", type=int, default=32, help="Large (3 Mpx) JPEG copies")
    parser.add_argument("--model", default="efficientnet_lite:lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="Interleaved rounds (median kept)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        root = args.images or write_random_jpegs(scratch / "images", args.n, classes=10)
        everything = load_source(root)
        images = spread(everything, args.n)
        large = large_copies(spread(images, args.large_n), scratch / "large")
        calibration = spread(
            everything.select([i for i, r in enumerate(everything) if r.id not in set(images.ids)]) or images,
            64,
        )
        model = create_embedder(args.model, pool="gap").eval()
        fp32, int8 = onnx_models(model, calibration, scratch / "onnx", args.batch_size)
        paths = {
            "plain PyTorch loop": lambda s: plain_loop(model, s, args.batch_size),
            "lookalike, PyTorch": lookalike_path(model, args.batch_size),
            "lookalike, ONNX Runtime fp32": lookalike_path(fp32, args.batch_size),
            "lookalike, ONNX Runtime int8": lookalike_path(int8, args.batch_size),
        }
        print(
            f"{args.model} + GAP, batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
            f"median of {args.repeats} round(s)"
        )
        report(f"{len(images)} images of {root}", measure(paths, images, args.repeats))
        report(
            f"{len(large)} JPEGs of {LARGE_SIZE[0]}x{LARGE_SIZE[1]} px",
            measure(paths, large, args.repeats),
        )


if __name__ == "__main__":
    main()
