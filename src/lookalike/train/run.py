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
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

from lookalike.config import save_config
from lookalike.data.records import ImageSet
from lookalike.losses import create_loss
from lookalike.losses.base import RetrievalLoss
from lookalike.models.embedder import Embedder
from lookalike.models.spec import build_embedder
from lookalike.models.training_checkpoint import read_checkpoint
from lookalike.runs import CHECKPOINT_DIR, CONFIG_FILE, MODEL_DIR, RunRecord, RunSettings
from lookalike.train.callbacks import (
    AtomicCheckpointIO,
    HistoryCallback,
    checkpoint_callbacks,
    early_stopping,
    remove_stale_temporaries,
)
from lookalike.train.config import (
    DataSpec,
    TrainConfig,
    TrainerSpec,
    check_config,
    monitor_key,
    resolve_precision,
)
from lookalike.train.data import RetrievalDataModule, load_training_sets, resize_preprocessing
from lookalike.train.export import export_checkpoint
from lookalike.train.loggers import make_loggers
from lookalike.train.module import RetrievalModule, text_tower

logger = logging.getLogger(__name__)



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


def run_training(config: TrainConfig) -> TrainOutcome:
    """Train, validate, checkpoint and export as ``config`` says; see the module docstring.

    Rerunning a config whose ``output`` holds ``checkpoints/last.ckpt`` resumes from it and ends
    where an uninterrupted run would.
    """
    started = time.monotonic()
    check_config(config)
    output = _prepare_run_folder(config)
    module, datamodule = _build_module_and_data(config)
    validated = datamodule.val_set is not None
    callbacks = _RunCallbacks.create(output, config.trainer, validated)
    trainer = _make_trainer(config, output, callbacks.in_order())
    last = _last_checkpoint(output)
    resume = last if last.is_file() else None
    if resume is not None:
        logger.info("resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    outcome = _outcome(output, callbacks)
    if trainer.global_rank == 0:
        _write_results(outcome, config, time.monotonic() - started)
    return outcome


def _last_checkpoint(output: Path) -> Path:
    return output / CHECKPOINT_DIR / "last.ckpt"


def _prepare_run_folder(config: TrainConfig) -> Path:
    """Create the run folder, clear a killed run's temporaries, save the config and seed."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output / CHECKPOINT_DIR)
    save_config(config, output / CONFIG_FILE)
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    return output


def _build_module_and_data(config: TrainConfig) -> tuple[RetrievalModule, RetrievalDataModule]:
    """The embedder, its loss and the data, with batches carrying what the loss needs."""
    embedder = build_embedder(config.model)
    embedder.preprocessing = resize_preprocessing(embedder.preprocessing, config.data.image_size)
    train, val, unlabelled = load_training_sets(config.data)
    loss = create_loss(
        config.loss, embedding_dim=embedder.embedding_dim, num_classes=len(train.classes()) or None
    )
    has_text, two_views = _batch_contents(loss, train, config.data)
    loss.validate(has_labels=train.is_labelled, has_text=has_text, has_views=two_views,
                  has_view_pairs=unlabelled is not None)
    if has_text:
        _start_from_pretrained_temperature(loss, embedder)
    datamodule = RetrievalDataModule(
        train,
        val,
        config.data,
        embedder.preprocessing,
        config.trainer.seed,
        with_labels=train.is_labelled,
        with_text=has_text,
        two_views=two_views,
        unlabelled=unlabelled,
    )
    module = RetrievalModule(
        embedder, loss, config.finetune, config.optim, val, config.trainer.seed,
        classes=datamodule.classes, views_are_positives=two_views,
    )
    return module, datamodule


def _batch_contents(loss: RetrievalLoss, train: ImageSet, data: DataSpec) -> tuple[bool, bool]:
    """Whether batches carry captions and whether they carry a second view of each image.

    Captions pair with images when the loss needs pairs, the images have captions and no second
    view was asked for; otherwise a pair loss, or a loss without labels to use, gets views.
    """
    captioned = any(record.caption for record in train.records)
    wants_views = getattr(loss, "pairs", "auto") == "views"
    has_text = loss.needs_pairs and captioned and not data.two_views and not wants_views
    two_views = (
        data.two_views
        or (loss.needs_pairs and not has_text)
        or (loss.needs_labels_or_views and not train.is_labelled)
    )
    return has_text, two_views


def _start_from_pretrained_temperature(loss: RetrievalLoss, embedder: Embedder) -> None:
    """Copy a CLIP text tower's learned logit scale into the loss's, when both exist."""
    pretrained_scale = getattr(text_tower(embedder), "logit_scale", None)
    if isinstance(pretrained_scale, torch.Tensor) and hasattr(loss, "logit_scale"):
        # Fine-tuning CLIP starts from its learned temperature (~1/100), not from 1/0.07.
        with torch.no_grad():
            loss.logit_scale.copy_(pretrained_scale.detach().reshape(()))


@dataclass
class _RunCallbacks:
    """The callbacks whose state the outcome reads after fitting."""

    history: HistoryCallback
    best: ModelCheckpoint
    last: ModelCheckpoint
    stopper: EarlyStopping | None

    @classmethod
    def create(cls, output: Path, spec: TrainerSpec, validated: bool) -> _RunCallbacks:
        """History, best/last checkpoints and, when validating with a patience, early stopping."""
        monitor = monitor_key(spec.monitor) if validated else None
        best, last = checkpoint_callbacks(output / CHECKPOINT_DIR, monitor, spec.monitor_mode)
        stopper = None
        if monitor is not None and spec.early_stopping_patience is not None:
            stopper = early_stopping(monitor, spec.monitor_mode, spec.early_stopping_patience)
        return cls(HistoryCallback(output), best, last, stopper)

    def in_order(self) -> list[L.Callback]:
        """What the trainer runs, history first and the progress bar last."""
        stopping = [] if self.stopper is None else [self.stopper]
        return [self.history, *stopping, self.best, self.last, RichProgressBar(leave=True)]


def _make_trainer(config: TrainConfig, output: Path, callbacks: list[L.Callback]) -> L.Trainer:
    spec = config.trainer
    return L.Trainer(
        max_epochs=spec.max_epochs,
        accelerator=spec.accelerator,
        devices=spec.devices,
        num_nodes=spec.num_nodes,
        strategy=spec.strategy,
        precision=resolve_precision(str(spec.precision), spec.accelerator),
        accumulate_grad_batches=spec.accumulate_grad_batches,
        gradient_clip_val=config.optim.grad_clip,
        deterministic=spec.deterministic,
        check_val_every_n_epoch=spec.val_every_n_epochs,
        limit_train_batches=spec.limit_train_batches,
        log_every_n_steps=spec.log_every_n_steps,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=make_loggers(list(spec.loggers), output),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # RetrievalDataModule shards whole batches itself
        default_root_dir=output,
        enable_progress_bar=True,
        enable_model_summary=False,
    )


def _outcome(output: Path, callbacks: _RunCallbacks) -> TrainOutcome:
    """The best checkpoint (the last when none was kept as best) and its epoch's val metrics."""
    last_path = _last_checkpoint(output)
    best_path = (
        Path(callbacks.best.best_model_path) if callbacks.best.best_model_path else last_path
    )
    if not best_path.is_file():
        best_path = last_path
    best_epoch = int(read_checkpoint(best_path)["epoch"])
    rows = callbacks.history.rows
    row = next((r for r in rows if int(r["epoch"]) == best_epoch), {})
    metrics = {
        key.removeprefix("val/"): value for key, value in row.items() if key.startswith("val/")
    }
    stopped_early = callbacks.stopper is not None and callbacks.stopper.stopped_epoch > 0
    return TrainOutcome(
        output,
        best_path,
        last_path,
        output / MODEL_DIR,
        metrics,
        best_epoch,
        len(rows),
        stopped_early,
    )


def _write_results(outcome: TrainOutcome, config: TrainConfig, seconds: float) -> None:
    """Export the best checkpoint and write ``metrics.json`` and ``run.json``."""
    export_checkpoint(outcome.best_checkpoint, outcome.model_dir)
    record = RunRecord(outcome.output)
    record.write_metrics(outcome.metrics)
    record.write_settings(RunSettings(kind="train"), **_run_details(outcome, config, seconds))


def _run_details(outcome: TrainOutcome, config: TrainConfig, seconds: float) -> dict[str, Any]:
    """What ``run.json`` records of a training run beside the shared settings."""
    return {
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
