"""Pruning a sweep's trial from its validation metric, epoch by epoch.

After every validation the monitored metric is reported to the Optuna trial as the value of that
epoch; when the trial's pruner (the median rule of Google Vizier, Golovin et al. 2017, in a sweep)
says the run is worse than its peers were at the same epoch, :class:`OptunaPruning` raises
``optuna.TrialPruned`` and Lightning stops the fit. The same job as optuna-integration's
``PyTorchLightningPruningCallback``, which is not installed with ``lightning`` here, on one device.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import lightning as L

from lookalike.train.config import monitor_key

logger = logging.getLogger(__name__)


class PrunableTrial(Protocol):
    """What the callback needs of ``optuna.Trial``."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


class OptunaPruning(L.Callback):
    """Report ``monitor`` after each validation to ``trial``; stop the run when it should be pruned.

    Args:
        trial: The Optuna trial (``optuna.Trial``).
        monitor: The metric reported, as ``trainer.monitor`` names it (``"map@r"``).
    """

    def __init__(self, trial: PrunableTrial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor_key(monitor)
        self.reported: dict[int, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(
                f"trainer.monitor {self.monitor!r} was not logged by validation; logged: "
                f"{', '.join(sorted(k for k in trainer.callback_metrics if k.startswith('val/')))}"
            )
        epoch = int(trainer.current_epoch)
        score = float(value)
        if not math.isfinite(score):
            score = float("nan")
        self.trial.report(score, step=epoch)
        self.reported[epoch] = score
        if self.trial.should_prune():
            import optuna  # the sweep's optional dependency, needed only where a trial prunes

            logger.info("pruned at epoch %d with %s = %.4f", epoch, self.monitor, score)
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.monitor} = {score:.4f}")
