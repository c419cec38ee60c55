"""Lightning loggers, by name: ``"csv"`` (always on), ``"tensorboard"``, ``"wandb"``, ``"mlflow"``.

Each entry of :data:`LOGGERS` builds a logger writing under a run folder; the last three need
their own packages (``lookalike[tensorboard]``, ``lookalike[wandb]``, ``lookalike[mlflow]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import loggers
from lightning.pytorch.loggers import Logger

from lookalike.registry import Registry

LOGGERS = Registry[Logger]("logger")


@LOGGERS.register("csv")
def csv_logger(output: Path) -> Logger:
    """``output/logs/version_0/metrics.csv``."""
    return loggers.CSVLogger(output, name="logs", version=0)


@LOGGERS.register("tensorboard")
def tensorboard_logger(output: Path) -> Logger:
    """TensorBoard event files under ``output/logs/version_0``."""
    return loggers.TensorBoardLogger(output, name="logs", version=0)


@LOGGERS.register("wandb")
def wandb_logger(output: Path) -> Logger:
    """A Weights & Biases run of project "lookalike", its files under ``output``."""
    return loggers.WandbLogger(project="lookalike", save_dir=str(output))


@LOGGERS.register("mlflow")
def mlflow_logger(output: Path) -> Logger:
    """An MLflow run of experiment "lookalike", tracked under ``output/mlruns``."""
    return loggers.MLFlowLogger("lookalike", save_dir=str(output / "mlruns"))


def make_loggers(names: Sequence[str], output: Path) -> list[Logger]:
    """The loggers named in ``names`` (each once), after the CSV logger that is always on.

    Args:
        names: Names of :data:`LOGGERS`.
        output: The run folder they write under.

    Raises:
        ValueError: An unknown name (the message lists the valid names).
    """
    wanted = dict.fromkeys(name.lower() for name in ["csv", *names])
    return [LOGGERS.create(name, output) for name in wanted]
