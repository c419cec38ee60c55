"""A run folder's ``last.ckpt`` is read as data: a damaged one is a one-line error naming it, and a
planted pickle whose loading would run code is refused, even with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (which turns off ``weights_only`` wherever a caller leaves
it unset)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.config import save_config
from lookalike.models.training_checkpoint import read_checkpoint
from tiny_training import tiny_config, write_images


class Payload:
    """Unpickled without ``weights_only``, this touches ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def _planted(path: Path, marker: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"w": torch.zeros(2)}, "epoch": 0, "x": Payload(marker)}
    if kind == "torch_zip":
        torch.save(payload, path)
    else:  # the legacy format: a bare pickle stream
        path.write_bytes(pickle.dumps(payload))


def _train(config_path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["train", "-c", str(config_path), "--no-test", "--no-report"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture
def run_config(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny training config whose run folder is ``tmp_path/run``; returns (yaml, last.ckpt)."""
    config = tiny_config(write_images(tmp_path / "img"), tmp_path / "run", "trainer.max_epochs=1")
    save_config(config, tmp_path / "train.yaml")
    return tmp_path / "train.yaml", tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("kind", ["torch_zip", "bare_pickle"])
def test_the_payload_is_live_without_weights_only(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ran"
    _planted(tmp_path / "evil.ckpt", marker, kind)
    try:
        torch.load(tmp_path / "evil.ckpt", weights_only=False)
    except RuntimeError:  # a bare pickle is unpickled first, then refused for its magic number
        pass
    assert marker.exists()  # so the tests below would see it, were the file unpickled


@pytest.mark.parametrize("kind", ["torch_zip", "bare_pickle"])
def test_a_planted_last_ckpt_never_runs(
    run_config: tuple[Path, Path], kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, last = run_config
    marker = tmp_path / "ran"
    _planted(last, marker, kind)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    status, lines = _train(config)
    assert not marker.exists()
    assert status == 2
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and str(last) in errors[0] and "could run code" in errors[0], lines
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage, not a checkpoint\n" * 10, "truncated", "a_tensor", "foreign_dict"],
    ids=["empty", "garbage", "truncated", "a_tensor", "foreign_dict"],
)
def test_a_damaged_last_ckpt_is_one_error_line_naming_it(
    run_config: tuple[Path, Path], damage: bytes | str, tmp_path: Path
) -> None:
    config, last = run_config
    last.parent.mkdir(parents=True)
    if damage == "truncated":
        torch.save({"state_dict": {"w": torch.randn(1000)}, "epoch": 0}, last)
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "a_tensor":
        torch.save(torch.zeros(3), last)
    elif damage == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 0}, last)
    else:
        last.write_bytes(damage)
    status, lines = _train(config)
    assert status == 2, lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and str(last) in errors[0], lines
    assert "Unpickling" not in errors[0]


def test_checkpoint_readers_refuse_the_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    _planted(tmp_path / "evil.ckpt", marker, "torch_zip")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match="could run code"):
        read_checkpoint(tmp_path / "evil.ckpt")
    result = CliRunner().invoke(
        app, ["embed", str(write_images(tmp_path / "img")), "-o", str(tmp_path / "emb"),
              "--checkpoint", str(tmp_path / "evil.ckpt"), "--workers", "0", "--device", "cpu"],
    )
    assert result.exit_code == 2 and "could run code" in result.output, result.output
    assert not marker.exists()
