"""Head training on cached backbone features against training on images, same run otherwise.

Two ``run_training`` runs of one config (frozen backbone without drop connect,
``data.augment: none``, a linear head and a loss), one with ``trainer.cache_features=false``
(every step decodes, transforms and runs the backbone) and one with
``trainer.cache_features=true`` (the train and val images embedded once, then only the head
trains). Prints, for both: training steps per second (the clock runs
over the training batches, their loading included, validation and epoch-end work excluded),
the whole run's seconds (the cached run's includes embedding the images once), and the final
val metrics, which should agree (the same training, see ``tests/train/test_cached_features.py``).

    python benchmarks/cached_head.py [--images ROOT] [--classes 24] [--per-class 12]
        [--epochs 3] [--batch-size 32] [--image-size 160] [--model efficientnet_lite:lite0]

``--images`` is a folder per class (default: ../shared/data/caltech101); the first
``--per-class`` images of the first ``--classes`` classes are used (through a CSV manifest),
split ``class_disjoint`` (half of the classes train, a quarter validate).
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from lookalike.config import resolve_config
from lookalike.train.config import TrainConfig
from lookalike.train.run import run_training

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "caltech101"


class StepClock(L.Callback):
    """Seconds and optimiser steps of the training batches: from the start of an epoch (or the
    end of the previous batch) to the end of each batch, so the loading of every batch counts
    and the validation and epoch-end work do not."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0
        self._last = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        self.seconds += now - self._last
        self.steps += 1
        self._last = now


def write_manifest(root: Path, classes: int, per_class: int, path: Path) -> Path:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("BACKGROUND"))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for folder in folders[:classes]:
            for image in sorted(folder.glob("*.jpg"))[:per_class]:
                writer.writerow([str(image), folder.name])
    return path


def train_once(args: argparse.Namespace, manifest: Path, output: Path, cache: str) -> dict[str, Any]:
    config = resolve_config(
        TrainConfig,
        overrides=[
            f"data.source=csv:{manifest}",
            f"data.batch_size={args.batch_size}",
            "data.m=4",
            "data.protocol_args.train_fraction=0.75",
            "data.protocol_args.val_fraction=0.34",
            "data.augment=none",
            "data.num_workers=0",
            f"data.image_size={args.image_size}",
            f"model.backbone={args.model}",
            "model.head=linear:128",
            "finetune.strategy=frozen",
            "loss.name=multi_similarity",
            "optim.head_lr=1e-3",
            f"trainer.max_epochs={args.epochs}",
            "trainer.accelerator=cpu" if args.device == "cpu" else "trainer.accelerator=auto",
            "trainer.log_every_n_steps=1",
            f"trainer.cache_features={cache}",
            f"output={output}",
            # EfficientNet's drop connect makes the image path random: off, so both train alike
            *(["model.backbone_kwargs.drop_connect_rate=0"] if "efficientnet" in args.model else []),
        ],
    )
    clock = StepClock()
    start = time.perf_counter()
    outcome = run_training(config, [clock])
    return {
        "steps_per_s": clock.steps / clock.seconds,
        "steps": clock.steps,
        "run_seconds": time.perf_counter() - start,
        "metrics": outcome.metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--model", default="efficientnet_lite:lite0")
    parser.add_argument("--device", default="cpu", help="cpu, or auto (CUDA when present)")
    args = parser.parse_args()
    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder; give a folder per class")
    logging.getLogger("lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as scratch:
        manifest = write_manifest(args.images, args.classes, args.per_class, Path(scratch) / "m.csv")
        images = train_once(args, manifest, Path(scratch) / "images", "false")
        features = train_once(args, manifest, Path(scratch) / "features", "true")

    print(f"{args.model} frozen + linear:128 head, multi-similarity, {args.classes} classes x "
          f"{args.per_class} images, {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs")
    for name, row in (("images (uncached)", images), ("cached features", features)):
        print(f"{name:18}: {row['steps_per_s']:8.2f} steps/s over {row['steps']} steps, "
              f"whole run {row['run_seconds']:6.1f} s")
    print(f"ratio (cached / uncached steps/s): {features['steps_per_s'] / images['steps_per_s']:.1f}x")
    for key in ("map@r", "recall@1", "map"):
        print(f"val {key:9}: uncached {images['metrics'].get(key, float('nan')):.4f}, "
              f"cached {features['metrics'].get(key, float('nan')):.4f}")


if __name__ == "__main__":
    main()
