"""``train``: a config in; checkpoints, an exported embedder, metrics and curves out.

::

    source ─ protocol ─► train images ─ sampler + augment ─► embedder ─► loss ─► optimiser
                      └► val images ─ eval transform ─► embedder ─► retrieval metrics

The run folder holds ``config.yaml`` (the resolved config), ``checkpoints/best.ckpt`` and
``checkpoints/last.ckpt`` (atomic; a rerun of the same config resumes from ``last.ckpt``),
``model/`` (the best checkpoint as safetensors, for ``embed``/``evaluate``), ``metrics.json``
(the val metrics of the best epoch), ``history.csv``, ``curves.png``, Lightning's logs and
``run.json``; with ``trainer.keep_every_epoch`` also ``checkpoints/epoch_N.ckpt`` and
``epochs/epoch_N/`` (:mod:`lookalike.train.epoch_artefacts`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from lookalike.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FEATURE_CACHE_DIR,
    MODEL_DIR,
    RunRecord,
    RunSettings,
)
from lookalike.train.cached_features import with_cached_features
from lookalike.train.callbacks import (
    AtomicCheckpointIO,
    FreeCachedMemory,
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
from lookalike.train.epoch_artefacts import epoch_callbacks
from lookalike.train.export import export_checkpoint
from lookalike.train.loggers import make_loggers
from lookalike.train.module import RetrievalModule, text_tower
from lookalike.train.validation import ValidationSet, check_cutoffs
from lookalike.utils.devices import free_cached_gpu_memory

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
        is_global_zero: This process is rank 0 (the one that exports and writes results; under
            DDP the other ranks run the same script and must stop after training).
    """

    output: Path
    best_checkpoint: Path
    last_checkpoint: Path
    model_dir: Path
    metrics: dict[str, float]
    best_epoch: int
    epochs: int
    stopped_early: bool
    is_global_zero: bool = True


def run_training(
    config: TrainConfig, extra_callbacks: Sequence[L.Callback] = ()
) -> TrainOutcome:
    """Train, validate, checkpoint and export as ``config`` says; see the module docstring.

    Rerunning a config whose ``output`` holds ``checkpoints/last.ckpt`` resumes from it and ends
    where an uninterrupted run would. ``extra_callbacks`` run beside the run's own (a sweep's
    pruning callback, :mod:`lookalike.train.pruning`), after its history and before its
    checkpoints.
    """
    started = time.monotonic()
    check_config(config)
    output = _prepare_run_folder(config)
    module, datamodule = _build_module_and_data(config)
    validated = datamodule.val_set is not None
    callbacks = _RunCallbacks.create(output, config.trainer, validated)
    own = [FreeCachedMemory(), *_epoch_callbacks(config, output, datamodule.val_set)]
    trainer = _make_trainer(config, output, callbacks.in_order([*own, *extra_callbacks]))
    last = _last_checkpoint(output)
    resume = last if last.is_file() else None
    if resume is not None:
        logger.info("resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    free_cached_gpu_memory()  # training's cache is not needed by the export or the test
    if trainer.is_global_zero:  # the feature cache only served a resume of this training
        shutil.rmtree(output / FEATURE_CACHE_DIR, ignore_errors=True)
    outcome = _outcome(output, callbacks)
    outcome.is_global_zero = trainer.is_global_zero
    if trainer.is_global_zero:
        _write_results(outcome, config, time.monotonic() - started)
    return outcome


def _with_cutoffs(val: ValidationSet | None, spec: TrainerSpec) -> ValidationSet | None:
    """``val`` validated at ``trainer.val_k``/``precision_k``, ranked ``results_k`` deep for the
    per-epoch results files."""
    if val is None:
        return None
    return replace(
        val,
        ks=check_cutoffs(spec.val_k, "trainer.val_k"),
        precision_ks=check_cutoffs(spec.precision_k, "trainer.precision_k", allow_empty=True),
        depth=spec.results_k if spec.keep_every_epoch else 0,
    )


def _epoch_callbacks(
    config: TrainConfig, output: Path, val: ValidationSet | None
) -> list[L.Callback]:
    """``trainer.keep_every_epoch``: the per-epoch checkpoints and folders (none when off)."""
    spec = config.trainer
    if not spec.keep_every_epoch:
        return []
    return epoch_callbacks(output, output / CHECKPOINT_DIR, val, config.data.val_split == "test",
                           spec.results_k, spec.results_names)


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
    if config.trainer.grad_checkpointing:
        embedder.backbone.set_grad_checkpointing(True)
    train, val, unlabelled = load_training_sets(config.data)
    val = _with_cutoffs(val, config.trainer)
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
    # a frozen backbone without pixel augmentation: embed once, train the head on the features
    return with_cached_features(config, module, datamodule)


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

    def in_order(self, extra: Sequence[L.Callback] = ()) -> list[L.Callback]:
        """What the trainer runs, history first, then ``extra``, the progress bar last."""
        stopping = [] if self.stopper is None else [self.stopper]
        return [self.history, *extra, *stopping, self.best, self.last,
                RichProgressBar(leave=True)]


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
