"""Embedding throughput: ``embed_image_set`` against a plain PyTorch loop, same model and images.

The baseline is what people write by hand: a ``Dataset`` that opens each file with PIL and applies
the eval transform, a ``DataLoader`` with the same batch size and workers, ``torch.no_grad`` and
``model(batch)``. lookalike adds broken-image skipping, resumable shards, channels-last and
``inference_mode``; this prints images per second for both and their ratio (> 1: lookalike is
faster), measured in this same run, plus the largest difference between the two embeddings.

    python benchmarks/embed_throughput.py [--images DIR] [--n 512] [--batch-size 64] [--workers 2]

Without ``--images`` it writes ``--n`` random 320x240 JPEGs to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _images import write_random_jpegs
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.models import create_embedder


class PlainImages(Dataset):
    """Files opened with PIL and transformed: the hand-written baseline."""

    def __init__(self, paths: list[Path], transform: object) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))  # type: ignore[operator]


def plain_loop(model: torch.nn.Module, paths: list[Path], batch_size: int, workers: int) -> np.ndarray:
    loader = DataLoader(PlainImages(paths, model.eval_transform()), batch_size=batch_size, num_workers=workers)
    parts = []
    with torch.no_grad():
        for batch in loader:
            parts.append(model(batch).numpy())
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="A folder per class (default: random JPEGs)")
    parser.add_argument("--n", type=int, default=512, help="Images used")
    parser.add_argument("--model", default="efficientnet_lite:lite0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.images
        if root is None:
            root = Path(scratch) / "images"
            write_random_jpegs(root, args.n, classes=10)
        images = load_source(root)
        images.records = images.records[: args.n]
        paths = [record.path for record in images]
        model = create_embedder(args.model, pool="gap").eval()

        plain_loop(model, paths[: args.batch_size], args.batch_size, 0)  # warm-up, both paths
        start = time.perf_counter()
        baseline = plain_loop(model, paths, args.batch_size, args.workers)
        plain_seconds = time.perf_counter() - start

        start = time.perf_counter()
        ours = embed_image_set(
            model, images, output_dir=Path(scratch) / "embeddings", batch_size=args.batch_size,
            num_workers=args.workers, device="cpu",
        )
        ours_seconds = time.perf_counter() - start

    n = len(paths)
    print(f"{args.model}, {n} images, batch {args.batch_size}, {args.workers} workers, {torch.get_num_threads()} threads")
    print(f"plain PyTorch loop : {n / plain_seconds:8.1f} images/s")
    print(f"lookalike embed    : {n / ours_seconds:8.1f} images/s")
    print(f"ratio (lookalike / plain): {plain_seconds / ours_seconds:.2f}x")
    print(f"max |difference| of embeddings: {np.abs(baseline - ours.embeddings).max():.2e}")


if __name__ == "__main__":
    main()
