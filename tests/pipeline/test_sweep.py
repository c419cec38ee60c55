"""Sweeps: the space file, per-epoch median pruning, and a study that resumes after a kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import sqlalchemy
import torch
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from lookalike.config import resolve_config, save_config
from lookalike.pipeline.sweep import SweepSettings, load_study, sweep
from lookalike.pipeline.sweep_space import as_overrides, load_space, sample
from lookalike.runs import RunRecord
from lookalike.train.config import TrainConfig
from lookalike.train.pruning import OptunaPruning
from tiny_training import tiny_config, write_images

SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "loss.name": {"type": "categorical", "choices": ["arcface", "triplet"]},
    "loss.margin": {"type": "float", "low": 0.1, "high": 0.3, "when": {"loss.name": "triplet"}},
}


def test_space_keys_are_checked_against_the_config() -> None:
    with pytest.raises(ValueError, match=r"'optim.lrr' is not a training setting; nearest: optim.lr"):
        load_space({"optim.lrr": {"type": "float", "low": 1e-5, "high": 1e-3}})
    with pytest.raises(ValueError, match="finetune.last_n is an int parameter"):
        load_space({"finetune.last_n": {"type": "int", "low": 0.5, "high": 8}})
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        load_space({"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}})
    with pytest.raises(ValueError, match=r"loss.margin is conditional on 'loss.name'"):
        load_space({"loss.margin": SPACE["loss.margin"], "loss.name": SPACE["loss.name"]})
    with pytest.raises(ValueError, match="does not take choices"):
        load_space({"optim.lr": {"type": "float", "low": 1, "high": 2, "choices": [1]}})
    # Open mappings (the loss's options, protocol_args) take any key below them.
    assert [p.key for p in load_space(SPACE)] == list(SPACE)


def test_conditional_parameters_follow_the_chosen_values(tmp_path: Path) -> None:
    params = load_space(SPACE)
    triplet = sample(params, optuna.trial.FixedTrial(
        {"optim.lr": 1e-3, "loss.name": "triplet", "loss.margin": 0.2}))
    arcface = sample(params, optuna.trial.FixedTrial({"optim.lr": 1e-3, "loss.name": "arcface"}))
    assert triplet == {"optim.lr": 1e-3, "loss.name": "triplet", "loss.margin": 0.2}
    assert arcface == {"optim.lr": 1e-3, "loss.name": "arcface"}
    config = resolve_config(TrainConfig, overrides=[*as_overrides(triplet), "data.source=x"])
    assert config.optim.lr == 1e-3 and config.loss == {"name": "triplet", "margin": 0.2}


def _trainer(epoch: int, value: float) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                           callback_metrics={"val/map@r": torch.tensor(value)})


def test_pruning_reports_each_epoch_and_stops_below_the_median() -> None:
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for curve in ([0.5, 0.7], [0.3, 0.9], [0.4, 0.6]):  # epoch-0 median 0.4, epoch-1 median 0.7
        trial = study.ask()
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
        study.tell(trial, curve[-1])
    trial = study.ask()
    callback = OptunaPruning(trial, "map@r")
    callback.on_validation_end(_trainer(0, 0.45), None)  # above 0.4: goes on
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        callback.on_validation_end(_trainer(1, 0.65), None)  # below 0.7: pruned
    assert callback.reported == pytest.approx({0: 0.45, 1: 0.65})
    assert study._storage.get_trial(trial._trial_id).intermediate_values == pytest.approx(
        {0: 0.45, 1: 0.65})
    with pytest.raises(ValueError, match="'val/map@5' was not logged"):
        OptunaPruning(study.ask(), "map@5").on_validation_end(_trainer(0, 0.5), None)


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_after_its_first_epoch(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    config = tiny_config(images, tmp_path / "unused", "loss.name=triplet", "model.head=none")
    space = {"optim.lr": SPACE["optim.lr"]}
    settings = SweepSettings(trials=2, startup_trials=1)
    # A finished trial that scored a perfect 1.0 at every epoch: any real trial is below it.
    study = load_study(tmp_path / "sweep", settings)
    study.add_trial(optuna.create_trial(
        params={"optim.lr": 1e-3}, distributions={"optim.lr": FloatDistribution(1e-4, 1e-2,
                                                                                log=True)},
        value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}, user_attrs={"epochs_run": 3}))
    result = sweep(config, space, tmp_path / "sweep", settings)
    pruned = result.trials[1]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [0]
    assert pruned.user_attrs["epochs_run"] == 1 and result.saved_epochs == 2
    folder = tmp_path / "sweep" / "trials" / "0001"
    assert (folder / "config.yaml").is_file() and not (folder / "run.json").exists()
    assert not (folder / "manifest.json").exists()  # an unfinished run, as readers expect


def _finished(study_dir: Path) -> list[optuna.trial.FrozenTrial]:
    if not (study_dir / "study.db").is_file() or not (study_dir / "trials").is_dir():
        return []  # the first trial's folder appears once the study's tables exist
    try:  # read only: creating tables here would race the sweep creating them
        storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}",
                                             skip_table_creation=True)
        return optuna.load_study(study_name="sweep", storage=storage).get_trials()
    except (KeyError, RuntimeError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError):  # not (completely) created yet
        return []


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_repeating_a_finished_trial(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    config_file = tmp_path / "base.yaml"
    save_config(tiny_config(images, tmp_path / "unused", "trainer.max_epochs=4"), config_file)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({"optim.lr": SPACE["optim.lr"],
                                          "optim.head_lr": SPACE["optim.lr"]}))
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "lookalike.cli.main", "sweep", "--config", str(config_file),
               "--space", str(space_file), "--trials", "3", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            states = [t.state for t in _finished(out)]
            # Killed in the middle of trial 1's training, after its first epoch's checkpoint.
            if states[:2] == [TrialState.COMPLETE, TrialState.RUNNING] and (
                out / "trials" / "0001" / "checkpoints" / "last.ckpt"
            ).is_file():
                break
            assert process.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("trial 1 never started")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first, killed = _finished(out)[:2]
    assert killed.state == TrialState.RUNNING and 0 in killed.intermediate_values
    manifest = out / "trials" / "0000" / "manifest.json"
    written = manifest.stat().st_mtime_ns

    result = sweep(config_file, space_file, out, SweepSettings(trials=3))

    states = [t.state for t in result.trials]
    # 0 finished before the kill, 1 was killed (failed), 2 retries it, 3 is new.
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                      TrialState.COMPLETE]
    assert result.trials[0].params == first.params and result.trials[0].value == first.value
    assert manifest.stat().st_mtime_ns == written  # trial 0 was not run again
    retry = result.trials[2]
    assert retry.params == result.trials[1].params
    assert retry.system_attrs["failed_trial"] == 1 and retry.user_attrs["run"] == "trials/0001"
    # It carries the killed trial's epochs on (its run resumes from the killed one's checkpoint).
    assert retry.intermediate_values[0] == killed.intermediate_values[0]
    assert sorted(retry.intermediate_values) == [0, 1, 2, 3]
    assert len({tuple(sorted(t.params.items())) for t in result.trials}) == 3
    for trial in (result.trials[0], retry, result.trials[3]):
        run = out / trial.user_attrs["run"]
        RunRecord(run).verify()
        assert trial.value == pytest.approx(RunRecord(run).read_metrics()["map@r"])
        assert trial.user_attrs["epochs_run"] == 4

    best = max((t for t in result.trials if t.state == TrialState.COMPLETE),
               key=lambda t: t.value)
    assert result.best is not None and result.best.number == best.number
    chosen = resolve_config(TrainConfig, result.best_config)
    assert chosen.optim.lr == pytest.approx(best.params["optim.lr"])
    assert chosen.optim.head_lr == pytest.approx(best.params["optim.head_lr"])
    with open(result.trials_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == [s.name for s in states]
    assert float(rows[3]["optim.lr"]) == pytest.approx(result.trials[3].params["optim.lr"])
    assert rows[2]["retry_of"] == "1"
    page = result.report_path.read_text()
    assert "Optimisation history" in page and page.count("<img") == 2  # history + importances
    # The study is finished: running again trains nothing.
    again = sweep(config_file, space_file, out, SweepSettings(trials=3))
    assert len(again.trials) == 4


def test_a_study_for_the_other_direction_is_refused(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    load_study(tmp_path / "sweep", direction="minimize")
    config = tiny_config(images, tmp_path / "unused")
    with pytest.raises(ValueError, match="made to minimize; trainer.monitor_mode asks to maximize"):
        sweep(config, {"optim.lr": SPACE["optim.lr"]}, tmp_path / "sweep")


@pytest.mark.slow
def test_parallel_workers_share_the_study_and_each_trial_has_its_folder(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    config = tiny_config(images, tmp_path / "unused", "trainer.max_epochs=1")
    result = sweep(config, {"optim.lr": SPACE["optim.lr"]}, tmp_path / "sweep",
                   SweepSettings(trials=2, jobs=2))
    complete = [t for t in result.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2  # two workers may both start the last trial
    # Trials ran in the worker processes (usually one each: a worker that starts late may find
    # the study already full and only wait), never in the calling process.
    workers = {t.user_attrs["worker"] for t in complete}
    assert all(w.rsplit(":", 1)[1] != str(os.getpid()) for w in workers)
    runs = {t.user_attrs["run"] for t in complete}
    assert len(runs) == len(complete)
    for trial in complete:
        assert trial.value == pytest.approx(
            RunRecord(tmp_path / "sweep" / trial.user_attrs["run"]).read_metrics()["map@r"])


@pytest.mark.slow
def test_a_trial_whose_config_is_refused_fails_alone_until_too_many_do(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    config = tiny_config(images, tmp_path / "unused", "trainer.max_epochs=1")
    space = {"data.sampler": {"type": "categorical", "choices": ["random", "bogus"]}}
    study = load_study(tmp_path / "sweep")
    study.enqueue_trial({"data.sampler": "bogus"})
    study.enqueue_trial({"data.sampler": "random"})
    result = sweep(config, space, tmp_path / "sweep", SweepSettings(trials=1))
    assert [t.state for t in result.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert result.trials[0].user_attrs["error"].startswith("unknown data.sampler 'bogus'")
    with open(result.trials_csv, newline="") as handle:
        assert next(csv.DictReader(handle))["error"].startswith("unknown data.sampler")

    for _ in range(3):
        study.enqueue_trial({"data.sampler": "bogus"})
    with pytest.raises(ValueError, match=r"2 trials failed in a row, the last \(trial 3"):
        sweep(config, space, tmp_path / "sweep", SweepSettings(trials=2, max_failures=1))
