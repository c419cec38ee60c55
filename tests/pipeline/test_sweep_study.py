"""The sweep's study: a trial whose worker process is gone is failed and queued again at once
(with its parameters and its run folder), a live one is left alone, and a resumed study draws
new random start-up points."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from lookalike.pipeline.sweep_study import (
    WORKER_ATTR,
    SweepSettings,
    fail_dead_trials,
    finished_trials,
    load_study,
    trial_folder,
)

LR = FloatDistribution(1e-4, 1e-2, log=True)
# The study is driven with ask/tell here; heartbeats are meant for optimize().
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def running_trial(study: optuna.Study, output: Path, pid: int) -> optuna.Trial:
    trial = study.ask({"optim.lr": LR})
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{pid}")
    trial.set_user_attr("run", str(trial_folder(output, trial).relative_to(output)))
    return trial


def test_a_trial_of_a_dead_worker_is_failed_and_queued_again_with_its_folder(
    tmp_path: Path,
) -> None:
    study = load_study(tmp_path, SweepSettings(seed=3))
    dead = running_trial(study, tmp_path, dead_pid())
    alive = running_trial(study, tmp_path, os.getpid())
    assert fail_dead_trials(study) == [dead.number]
    trials = {t.number: t for t in study.get_trials()}
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    retries = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.params == trials[dead.number].params  # the same point of the space, again
    assert retry.system_attrs["failed_trial"] == dead.number
    # The retry trains in the killed trial's folder, so its run resumes from the checkpoint.
    assert trial_folder(tmp_path, retry) == tmp_path / "trials" / f"{dead.number:04d}"
    assert fail_dead_trials(study) == []  # nothing left to fail


def test_finished_counts_complete_and_pruned_trials_only(tmp_path: Path) -> None:
    study = load_study(tmp_path)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        trial = study.ask({"optim.lr": LR})
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    study.ask({"optim.lr": LR})  # running
    assert finished_trials(study) == 2


def test_a_resumed_study_draws_new_random_points(tmp_path: Path) -> None:
    settings = SweepSettings(seed=0, random_trials=10)
    first = load_study(tmp_path, settings)
    drawn = [first.ask({"optim.lr": LR}).params["optim.lr"] for _ in range(2)]
    again = load_study(tmp_path, settings)  # the same command, rerun
    assert again.ask({"optim.lr": LR}).params["optim.lr"] not in drawn
    fresh = load_study(tmp_path / "other", settings)  # a new sweep with the same seed
    assert fresh.ask({"optim.lr": LR}).params["optim.lr"] == drawn[0]
