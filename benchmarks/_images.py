"""Random JPEGs in a folder per class: the default input of the throughput benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_random_jpegs(folder: Path, n: int, classes: int) -> Path:
    """``n`` random 320x240 JPEGs spread over ``classes`` class folders; returns ``folder``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        label = folder / f"class_{i % classes:02d}"
        label.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(label / f"{i:05d}.jpg", quality=90)
    return folder
