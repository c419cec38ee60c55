"""Checkpoints written atomically, and the per-epoch history with its curves.

Lightning's own ``_atomic_save`` stages the file in the system temp folder and ``shutil.move`` s it
into place: across file systems that is a copy, visible half-written, and nothing is fsynced.
:class:`AtomicCheckpointIO` writes beside the target, fsyncs and ``os.replace`` s it instead
(:func:`lookalike.utils.atomic.atomic_path`), so ``best.ckpt`` and ``last.ckpt`` are always whole,
even under SIGKILL; a temporary left by a kill is removed by :func:`remove_stale_temporaries` when
the run restarts.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lookalike.models.training_checkpoint import read_checkpoint
from lookalike.runs import CURVES_FILE, HISTORY_FILE
from lookalike.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from lookalike.utils.devices import free_cached_gpu_memory

logger = logging.getLogger(__name__)

BEST_NAME = "best"
LAST_NAME = "last"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the checkpoint, fsync, then ``os.replace``; and
    reading with ``weights_only=True`` whatever the caller (or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``)
    asks, so a planted ``last.ckpt`` is data, never code that runs."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        logger.debug("saved checkpoint %s", path)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """The lookalike training checkpoint at ``path``, read with ``weights_only=True`` onto
        the CPU (:func:`~lookalike.models.training_checkpoint.read_checkpoint`).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: One line naming ``path``: damaged, not a lookalike training checkpoint,
                or holding objects whose loading could run code.
        """
        del map_location, weights_only  # always the CPU (Lightning moves state later), always safe
        try:
            return read_checkpoint(path)
        except ValueError as error:
            raise ValueError(f"{error}; delete it to train from the start") from None


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of :func:`atomic_path` a killed run left in ``folder``."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink()
        logger.info("removed %s left by an interrupted write", path)
    return stale


def checkpoint_callbacks(
    folder: str | os.PathLike[str], monitor: str | None, mode: str
) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """``best.ckpt`` (the best ``monitor`` so far, saved after validation) and ``last.ckpt``
    (saved after every training epoch, what a killed run resumes from).

    Without ``monitor`` (no validation) ``best.ckpt`` is the latest epoch too.
    """
    best = ModelCheckpoint(
        dirpath=folder,
        filename=BEST_NAME,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_on_train_epoch_end=monitor is None,
    )
    last = ModelCheckpoint(
        dirpath=folder,
        filename=LAST_NAME,
        monitor=None,
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    return best, last


def early_stopping(monitor: str, mode: str, patience: int) -> EarlyStopping:
    """Stop after ``patience`` validations without improvement of ``monitor``."""
    return EarlyStopping(
        monitor=monitor, mode=mode, patience=patience, check_on_train_epoch_end=False, verbose=True
    )


class HistoryCallback(L.Callback):
    """One row per epoch (train means, val metrics, learning rate) -> ``history.csv`` and
    ``curves.png`` in ``folder``, rewritten atomically after every epoch.

    The rows are part of the checkpoint (:meth:`state_dict`), so a resumed run continues them.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.rows: list[dict[str, float]] = []
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            self._validated = False
            return
        row: dict[str, float] = {
            "epoch": float(trainer.current_epoch),
            "step": float(trainer.global_step),
        }
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and key.endswith("_epoch"):
                row[key.removesuffix("_epoch")] = float(value)
            elif key.startswith("val/") and self._validated:
                row[key] = float(value)
        if self._validated:
            # float64 values as computed, not the float32 copies Lightning logs
            exact = getattr(pl_module, "last_val_metrics", {})
            row.update({f"val/{key}": float(value) for key, value in exact.items()})
        for index, optimizer in enumerate(trainer.optimizers):
            row[f"lr/group{index}"] = float(optimizer.param_groups[0]["lr"])
        self.rows.append(row)
        self._validated = False
        self.write()

    def write(self) -> None:
        """Write ``history.csv`` and ``curves.png``."""
        if not self.rows:
            return
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.folder / HISTORY_FILE, buffer.getvalue())
        atomic_write_bytes(self.folder / CURVES_FILE, plot_curves(self.rows))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict.get("rows", [])]


def plot_curves(rows: list[dict[str, float]]) -> bytes:
    """PNG of every logged value against the epoch, one panel per metric (the report's plot)."""
    import pandas as pd

    from lookalike.report.plots import figure_to_png, training_curves

    history = pd.DataFrame(rows).drop(columns=["step"], errors="ignore")
    figure = training_curves(history)
    if figure is None:
        raise ValueError("no logged values to plot yet")
    return figure_to_png(figure)


class FreeCachedMemory(L.Callback):
    """Release the CUDA allocator's cached blocks when validation starts and when it ends, so
    the memory training's activations held serves validation's larger batches and back
    (:func:`~lookalike.utils.devices.free_cached_gpu_memory`; nothing happens without CUDA)."""

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        released = free_cached_gpu_memory()
        if released:
            logger.debug("released %d cached GPU bytes before validation", released)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        released = free_cached_gpu_memory()
        if released:
            logger.debug("released %d cached GPU bytes after validation", released)
