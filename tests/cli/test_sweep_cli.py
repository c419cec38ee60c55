"""``lookalike sweep``: a bad space or config is one line, before any trial runs."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.config import save_config
from tiny_training import tiny_config, write_images

runner = CliRunner()


def _files(tmp_path: Path, space: dict) -> tuple[Path, Path]:
    config = tmp_path / "base.yaml"
    save_config(tiny_config(write_images(tmp_path / "images"), tmp_path / "unused"), config)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space))
    return config, space_file


def test_an_unknown_space_key_is_one_line_naming_the_nearest(tmp_path: Path) -> None:
    config, space = _files(tmp_path, {"finetune.lastn": {"type": "int", "low": 1, "high": 4}})
    result = runner.invoke(app, ["sweep", "-c", str(config), "-s", str(space),
                                 "-o", str(tmp_path / "sweep")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert f"space file {space}: 'finetune.lastn' is not a training setting" in result.output
    assert "nearest: finetune.last_n" in result.output
    assert not (tmp_path / "sweep" / "trials").exists()


def test_a_sweep_without_validation_is_refused(tmp_path: Path) -> None:
    config, space = _files(tmp_path, {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}})
    result = runner.invoke(app, ["sweep", "-c", str(config), "-s", str(space),
                                 "-o", str(tmp_path / "sweep"), "data.val_split=none"])
    assert result.exit_code == 2 and "set data.val_split" in result.output
    assert "Usage" in runner.invoke(app, ["sweep", "--help"]).output
