"""Every registered Lightning logger builds under the run folder; CSV is always first, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, Logger

from lookalike.train.loggers import LOGGERS, make_loggers


@pytest.mark.parametrize("name", LOGGERS.names())
def test_every_logger_builds(name: str, tmp_path: Path) -> None:
    try:
        made = LOGGERS.create(name, tmp_path)
    except ModuleNotFoundError as error:  # tensorboard, wandb and mlflow are optional extras
        pytest.skip(f"the {name} logger needs a package that is not installed: {error}")
    assert isinstance(made, Logger)


def test_csv_logger_comes_first_once_and_writes_under_logs(tmp_path: Path) -> None:
    made = make_loggers(["csv", "CSV"], tmp_path)
    assert len(made) == 1 and isinstance(made[0], CSVLogger)
    assert Path(made[0].log_dir) == tmp_path / "logs" / "version_0"


def test_unknown_logger_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid names: csv, mlflow, tensorboard, wandb"):
        make_loggers(["neptune"], tmp_path)
