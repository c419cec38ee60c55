"""``train``: a config in; checkpoints, an exported embedder, metrics and curves out.

::

    source ─ protocol ─► train images ─ sampler + augment ─► embedder ─► loss ─► optimiser
                      └► val images ─ eval transform ─► embedder ─► retrieval metrics

The run folder holds ``config.yaml`` (the resolved config), ``checkpoints/best.ckpt`` and
``checkpoints/last.ckpt`` (atomic; a rerun of the same config resumes from ``last.ckpt``),
``model/`` (the best checkpoint as safetensors, for ``embed``/``evaluate``), ``metrics.json``
(the val metrics of the best epoch), ``history.csv``, ``curves.png``, Lightning's logs and
``run.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import Logger

from lookalike.config import save_config
from lookalike.losses import create_loss
from lookalike.pipeline.specs import build_embedder
from lookalike.train.callbacks import (
    AtomicCheckpointIO,
    HistoryCallback,
    checkpoint_callbacks,
    early_stopping,
    remove_stale_temporaries,
)
from lookalike.train.config import TrainConfig, check_config, monitor_key, resolve_precision
from lookalike.train.data import RetrievalDataModule, load_training_data, resize_preprocessing
from lookalike.train.export import export_checkpoint, read_checkpoint
from lookalike.train.module import RetrievalModule, text_tower
from lookalike.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"


@dataclass
class TrainOutcome:
    """What a training run produced.

    Attributes:
        output: The run folder.
        best_checkpoint: ``checkpoints/best.ckpt`` (the latest epoch when nothing is validated).
        last_checkpoint: ``checkpoints/last.ckpt``.
        model_dir: The exported embedder folder (``load_embedder`` reads it).
        metrics: Val metrics of the best epoch (``metrics.json``), empty without validation.
        best_epoch: Epoch of the best checkpoint (from 0).
        epochs: Epochs trained in total (over resumes).
        stopped_early: Early stopping ended the run.
    """

    output: Path
    best_checkpoint: Path
    last_checkpoint: Path
    model_dir: Path
    metrics: dict[str, float]
    best_epoch: int
    epochs: int
    stopped_early: bool


def make_loggers(names: list[str], output: Path) -> list[Logger]:
    """Lightning loggers writing under ``output/logs`` (CSV always)."""
    from lightning.pytorch import loggers

    made: list[Logger] = [loggers.CSVLogger(output, name="logs", version=0)]
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            made.append(loggers.TensorBoardLogger(output, name="logs", version=0))
        elif name == "wandb":
            made.append(loggers.WandbLogger(project="lookalike", save_dir=str(output)))
        elif name == "mlflow":
            made.append(loggers.MLFlowLogger("lookalike", save_dir=str(output / "mlruns")))
    return made


def run_training(config: TrainConfig) -> TrainOutcome:
    """Train, validate, checkpoint and export as ``config`` says; see the module docstring.

    Rerunning a config whose ``output`` holds ``checkpoints/last.ckpt`` resumes from it and ends
    where an uninterrupted run would.
    """
    started = time.monotonic()
    check_config(config)
    trainer_spec = config.trainer
    output = Path(config.output)
    checkpoints = output / CHECKPOINT_DIR
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(checkpoints)
    save_config(config, output / CONFIG_FILE)
    L.seed_everything(trainer_spec.seed, workers=True, verbose=False)

    embedder = build_embedder(config.model)
    embedder.preprocessing = resize_preprocessing(embedder.preprocessing, config.data.image_size)
    train, val = load_training_data(config.data)
    has_labels = train.is_labelled
    loss = create_loss(
        config.loss, embedding_dim=embedder.embedding_dim, num_classes=len(train.classes()) or None
    )
    captioned = any(record.caption for record in train.records)
    wants_views = getattr(loss, "pairs", "auto") == "views"
    has_text = loss.needs_pairs and captioned and not config.data.two_views and not wants_views
    two_views = config.data.two_views or (loss.needs_pairs and not has_text) or (
        loss.needs_labels_or_views and not has_labels
    )
    loss.validate(has_labels=has_labels, has_text=has_text, has_views=two_views)
    if has_text:
        tower = text_tower(embedder)
        pretrained_scale = getattr(tower, "logit_scale", None)
        if isinstance(pretrained_scale, torch.Tensor) and hasattr(loss, "logit_scale"):
            # Fine-tuning CLIP starts from its learned temperature (~1/100), not from 1/0.07.
            with torch.no_grad():
                loss.logit_scale.copy_(pretrained_scale.detach().reshape(()))
    datamodule = RetrievalDataModule(
        train, val, config.data, embedder.preprocessing, trainer_spec.seed,
        with_labels=has_labels, with_text=has_text, two_views=two_views,
    )
    module = RetrievalModule(embedder, loss, config.finetune, config.optim, val, trainer_spec.seed)

    monitor = monitor_key(trainer_spec.monitor) if val is not None else None
    best, last = checkpoint_callbacks(checkpoints, monitor, trainer_spec.monitor_mode)
    history = HistoryCallback(output)
    callbacks: list[L.Callback] = [history, best, last, RichProgressBar(leave=True)]
    stopper = None
    if monitor is not None and trainer_spec.early_stopping_patience is not None:
        stopper = early_stopping(
            monitor, trainer_spec.monitor_mode, trainer_spec.early_stopping_patience
        )
        callbacks.insert(1, stopper)
    trainer = L.Trainer(
        max_epochs=trainer_spec.max_epochs,
        accelerator=trainer_spec.accelerator,
        devices=trainer_spec.devices,
        num_nodes=trainer_spec.num_nodes,
        strategy=trainer_spec.strategy,
        precision=resolve_precision(str(trainer_spec.precision), trainer_spec.accelerator),
        accumulate_grad_batches=trainer_spec.accumulate_grad_batches,
        gradient_clip_val=config.optim.grad_clip,
        deterministic=trainer_spec.deterministic,
        check_val_every_n_epoch=trainer_spec.val_every_n_epochs,
        limit_train_batches=trainer_spec.limit_train_batches,
        log_every_n_steps=trainer_spec.log_every_n_steps,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=make_loggers(list(trainer_spec.loggers), output),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # RetrievalDataModule shards whole batches itself
        default_root_dir=output,
        enable_progress_bar=True,
        enable_model_summary=False,
    )
    last_path = checkpoints / "last.ckpt"
    resume = last_path if last_path.is_file() else None
    if resume is not None:
        logger.info("resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)

    best_path = Path(best.best_model_path) if best.best_model_path else last_path
    if not best_path.is_file():
        best_path = last_path
    best_epoch = int(read_checkpoint(best_path)["epoch"])
    row = next((r for r in history.rows if int(r["epoch"]) == best_epoch), {})
    metrics = {
        key.removeprefix("val/"): value for key, value in row.items() if key.startswith("val/")
    }
    stopped_early = stopper is not None and stopper.stopped_epoch > 0
    outcome = TrainOutcome(
        output, best_path, last_path, output / MODEL_DIR, metrics, best_epoch,
        len(history.rows), stopped_early,
    )
    if trainer.global_rank == 0:
        export_checkpoint(best_path, outcome.model_dir)
        atomic_write_json(output / METRICS_FILE, metrics)
        record = _run_record(outcome, config, time.monotonic() - started)
        atomic_write_json(output / RUN_FILE, record)
    return outcome


def _run_record(outcome: TrainOutcome, config: TrainConfig, seconds: float) -> dict[str, Any]:
    return {
        "kind": "train",
        "config": CONFIG_FILE,
        "best_checkpoint": str(outcome.best_checkpoint),
        "last_checkpoint": str(outcome.last_checkpoint),
        "model": str(outcome.model_dir),
        "monitor": config.trainer.monitor,
        "monitor_mode": config.trainer.monitor_mode,
        "best_epoch": outcome.best_epoch,
        "best_score": outcome.metrics.get(config.trainer.monitor.removeprefix("val/")),
        "epochs": outcome.epochs,
        "stopped_early": outcome.stopped_early,
        "seconds_this_session": round(seconds, 3),
    }
