from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lookalike.config import resolve_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    name: str = "adamw"


@dataclass
class Job:
    epochs: int = 3
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("epochs: 7\noptim:\n  lr: 0.5\n")
    config = resolve_config(Job, path, ["optim.name=sgd"])
    assert config == Job(epochs=7, optim=Optim(lr=0.5, name="sgd"))


def test_override_beats_yaml(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("epochs: 7\n")
    assert resolve_config(Job, path, ["epochs=9"]).epochs == 9


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = Job(epochs=2, optim=Optim(lr=0.1), tags=["a"])
    saved = save_config(config, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load(saved.read_text()) == {"epochs": 2, "optim": {"lr": 0.1, "name": "adamw"}, "tags": ["a"]}
    assert resolve_config(Job, saved) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["epochs=many"], "overrides"), (["nosuchkey=1"], "overrides"), (["epochs"], "key=value")],
)
def test_bad_overrides_give_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        resolve_config(Job, None, overrides)
    assert "\n" not in str(info.value)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: lots\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        resolve_config(Job, path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        resolve_config(Job, tmp_path / "missing.yaml")
