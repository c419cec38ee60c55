"""Training throughput: lookalike's Lightning loop against a plain PyTorch loop, same everything.

Both sides train a fresh copy of the same embedder (``create_embedder`` with the same backbone,
weights, pooling, head and input size) with the same loss (``create_loss``), AdamW, batch size,
precision, device, training images, train augmentation (``train_transform``) and DataLoader
workers; this prints images per second over the timed steps of both and their ratio (> 1:
lookalike is faster), measured in this same run, plus the mean loss of the timed steps.

The baseline is what people write by hand: a ``Dataset`` that opens each file with PIL and applies
the transform, a shuffling ``DataLoader`` and ``zero_grad / forward / loss / backward / step``
under ``torch.autocast`` for mixed precision, with one AdamW group (lr 1e-4, weight decay 1e-4).

The lookalike side is ``RetrievalModule`` + ``RetrievalDataModule`` under a Lightning ``Trainer``
set up as ``run_training`` sets it up (CSV logger, per-step logging of the loss, per-step
learning-rate schedule, AdamW parameter groups with their own learning rates and no decay on 1-D
parameters, epoch-keyed sampler and per-image seeded augmentation), without checkpointing and
export, which ``run_training`` does at epoch end, outside the timed steps anyway.

Timing: the first ``--warmup`` steps of each side are not timed (worker start-up, allocator and
kernel warm-up, lookalike's gradient-flow check on the first step); the clock runs from the start
of step ``warmup`` (its batch already loaded) to the end of the last step, synchronising CUDA at
both ends. Both samplers draw batches at random (``data.sampler=random``).

    python benchmarks/train_throughput.py [--images DIR] [--n 320] [--batch-size 16] [--steps 10]
        [--warmup 2] [--workers 2] [--image-size 128] [--device auto] [--precision 32]
        [--threads 0] [--repeats 1]

On a machine shared with other CPU-heavy jobs, ``--threads 1`` avoids OpenMP threads waiting on
each other (steps then vary by seconds) and ``--repeats 3`` keeps the least disturbed run.

Without ``--images`` it writes ``--n`` random 320x240 JPEGs in 16 classes to a temporary folder.
Training uses 75% of the classes (``class_disjoint`` protocol).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _images import write_random_jpegs
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lookalike.data.records import ImageSet
from lookalike.losses import create_loss
from lookalike.models import create_embedder
from lookalike.models.embedder import Embedder
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.train.augment import train_transform
from lookalike.train.config import DataSpec, TrainConfig, resolve_precision
from lookalike.train.data import RetrievalDataModule, load_training_data, resize_preprocessing
from lookalike.train.loggers import make_loggers
from lookalike.train.module import RetrievalModule


class PlainImages(Dataset):
    """Files opened with PIL, augmented, with their class index: the hand-written baseline."""

    def __init__(self, paths: list[Path], labels: list[int], transform: Any) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_training(
    model: Embedder,
    train: ImageSet,
    config: TrainConfig,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, int, float]:
    """Train by hand; returns (seconds, images, mean loss) of the timed steps."""
    classes = {name: code for code, name in enumerate(train.classes())}
    loss_fn = create_loss(config.loss, embedding_dim=model.embedding_dim, num_classes=len(classes))
    model, loss_fn = model.to(device).train(), loss_fn.to(device)
    parameters = [*model.parameters(), *loss_fn.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=1e-4)
    dataset = PlainImages(
        [record.path for record in train],
        [classes[label] for label in train.labels],
        train_transform(model.preprocessing, config.data.augment),
    )
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.precision == "bf16-mixed"
        else nullcontext()
    )
    start, images, losses = 0.0, 0, []
    for step, (batch, labels) in enumerate(loader):
        if step == args.warmup:
            _synchronize(device)
            start = time.perf_counter()
        batch, labels = batch.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(batch), labels)["loss"]
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            images += int(batch.shape[0])
            losses.append(loss.detach())
        if step == args.warmup + args.steps - 1:
            break
    _synchronize(device)
    return time.perf_counter() - start, images, float(torch.stack(losses).mean())


class StepTimer(L.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step, images trained
    and losses in that window."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.end = 0.0
        self.images = 0
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.warmup:
            _synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx >= self.warmup:
            _synchronize(self.device)
            self.end = time.perf_counter()
            self.images += int(batch["images"].shape[0])
            self.losses.append(outputs["loss"].detach())


def lookalike_training(
    config: TrainConfig, args: argparse.Namespace, device: torch.device
) -> tuple[float, int, float]:
    """Train through ``RetrievalModule`` under Lightning; (seconds, images, mean loss) timed."""
    embedder = build_embedder(config.model)
    embedder.preprocessing = resize_preprocessing(embedder.preprocessing, config.data.image_size)
    train, val = load_training_data(config.data)
    loss = create_loss(
        config.loss, embedding_dim=embedder.embedding_dim, num_classes=len(train.classes())
    )
    datamodule = RetrievalDataModule(
        train, val, config.data, embedder.preprocessing, config.trainer.seed, with_labels=True
    )
    module = RetrievalModule(
        embedder, loss, config.finetune, config.optim, val, config.trainer.seed
    )
    timer = StepTimer(args.warmup, device)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=resolve_precision(args.precision, device.type),
        limit_train_batches=args.warmup + args.steps,
        log_every_n_steps=config.trainer.log_every_n_steps,
        num_sanity_val_steps=0,
        callbacks=[timer],
        logger=make_loggers([], Path(config.output)),
        enable_checkpointing=False,
        use_distributed_sampler=False,
        default_root_dir=config.output,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.end - timer.start, timer.images, float(torch.stack(timer.losses).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="A folder per class (default: random JPEGs)")
    parser.add_argument("--n", type=int, default=320, help="Random images written")
    parser.add_argument("--model", default="efficientnet_lite:lite0")
    parser.add_argument("--weights", default="pretrained", help="pretrained, none or a file")
    parser.add_argument("--pool", default="gap")
    parser.add_argument("--head", default="linear:128")
    parser.add_argument("--loss", default="multi_similarity")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--augment", default="weak", choices=("weak", "strong", "none"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="Timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before them")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="32", choices=("32", "bf16-mixed"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeats", type=int, default=1, help="Alternating runs; best kept")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    logging.getLogger("lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    with tempfile.TemporaryDirectory() as scratch:
        root = args.images
        if root is None:
            root = Path(scratch) / "images"
            write_random_jpegs(root, args.n, classes=16)
        config = TrainConfig(
            model=ModelSpec(
                backbone=args.model, pool=args.pool, head=args.head, weights=args.weights
            ),
            data=DataSpec(
                source=f"folder:{root}", protocol="class_disjoint",
                protocol_args={"train_fraction": 0.75}, val_split="none",
                batch_size=args.batch_size, num_workers=args.workers, sampler="random",
                augment=args.augment, image_size=args.image_size,
            ),
            loss={"name": args.loss},
            output=str(Path(scratch) / "run"),
        )  # fmt: skip
        train, _ = load_training_data(config.data)
        needed = (args.warmup + args.steps) * args.batch_size
        if len(train) < needed:
            parser.error(
                f"{len(train)} training images, {needed} needed for --warmup + --steps batches "
                f"of {args.batch_size}; raise --n or lower --steps"
            )
        plain_runs, ours_runs = [], []
        for _ in range(args.repeats):
            torch.manual_seed(0)
            model = create_embedder(
                args.model, pool=args.pool, head=args.head, weights=args.weights
            )
            model.preprocessing = resize_preprocessing(model.preprocessing, args.image_size)
            plain_runs.append(plain_training(model, train, config, args, device))
            torch.manual_seed(0)
            ours_runs.append(lookalike_training(config, args, device))

    # the fastest of the repeats: the least disturbed by other load on the machine
    plain_seconds, plain_images, plain_loss = min(plain_runs)
    ours_seconds, ours_images, ours_loss = min(ours_runs)
    plain_rate, ours_rate = plain_images / plain_seconds, ours_images / ours_seconds
    print(
        f"{args.model} pool {args.pool} head {args.head}, loss {args.loss}, {args.image_size} px, "
        f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, "
        f"{args.workers} workers, {device}, precision {args.precision}, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}"
    )
    print(f"plain PyTorch loop : {plain_rate:8.1f} images/s  (mean loss {plain_loss:.4f})")
    print(f"lookalike Lightning: {ours_rate:8.1f} images/s  (mean loss {ours_loss:.4f})")
    print(f"ratio (lookalike / plain): {ours_rate / plain_rate:.2f}x")


if __name__ == "__main__":
    main()
