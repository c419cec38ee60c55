"""The Optuna study of a sweep: its SQLite storage, trial folders, and trials a kill left behind.

A sweep's study lives in ``OUT/study.db`` so that rerunning the sweep continues it. Heartbeats
and Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queue again a trial whose
process went silent for the grace period; :func:`fail_dead_trials` does so at once for a trial
whose worker process on this machine is gone. A retry trains in the killed trial's folder
(:func:`trial_folder`), so Lightning resumes it from its last checkpoint.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

STUDY_FILE = "study.db"
STUDY_NAME = "sweep"
TRIALS_DIR = "trials"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"
"""The trial attribute naming the process that runs it (``host:pid``)."""
_SETTLE_SECONDS = 10


@dataclass
class SweepSettings:
    """How a sweep runs.

    Attributes:
        trials: Finished trials (complete or pruned) the study should hold in the end.
        jobs: Worker processes running trials at the same time.
        seed: Seed of the TPE sampler (moved on by each worker and by each resume).
        random_trials: Trials sampled at random before TPE models the rest (Optuna's default,
            10, would leave a short sweep all random).
        startup_trials: Trials the median pruner lets finish before it prunes any.
        warmup_epochs: Epochs of every trial it never prunes.
        heartbeat: Seconds between a running trial's heartbeats in the study.
        grace_period: Seconds without a heartbeat after which a trial counts as killed.
        max_retry: Times a killed trial is run again.
        max_failures: Trials in a row that may fail (their sampled config refused, training
            diverged: a ``ValueError`` or ``RuntimeError``, kept in the trial's ``error``)
            before the sweep stops with the last error.
    """

    trials: int = 10
    jobs: int = 1
    seed: int = 0
    random_trials: int = 4
    startup_trials: int = 3
    warmup_epochs: int = 0
    heartbeat: int = 30
    grace_period: int = 120
    max_retry: int = 3
    max_failures: int = 3


def study_storage(output: Path, settings: SweepSettings) -> RDBStorage:
    """The SQLite storage of the study in ``output``, with heartbeats and retries of killed
    trials."""
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            f"sqlite:///{(output / STUDY_FILE).resolve()}",
            engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=settings.heartbeat,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=settings.max_retry, inherit_intermediate_values=True
            ),
        )


def load_study(output: str | os.PathLike[str], settings: SweepSettings | None = None,
               direction: str = "maximize", worker: int = 0) -> optuna.Study:
    """The study of the sweep folder ``output`` (created when new), with its TPE sampler and
    median pruner."""
    settings = settings or SweepSettings()
    Path(output).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=study_storage(Path(output), settings),
        study_name=STUDY_NAME,
        direction=direction,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        ),
    )
    # A resumed sweep seeded as the first one was would draw the same random start-up points
    # again: the seed moves on with the trials the study already holds (and with the worker).
    started = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(
        n_startup_trials=settings.random_trials, seed=settings.seed + 1009 * started + worker
    )
    return study


def trial_folder(output: Path, trial: FrozenTrial | optuna.Trial) -> Path:
    """``OUT/trials/NNNN`` of a trial; a retry of a killed trial reuses the killed one's (its
    ``run`` attribute, which the retry inherits), so its run resumes from the last checkpoint."""
    run = trial.user_attrs.get("run")
    return output / str(run) if run else output / TRIALS_DIR / f"{trial.number:04d}"


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark failed (and queue again) the RUNNING trials whose worker process on this machine is
    gone: a killed sweep is resumed at once, without waiting for the heartbeat's grace period.

    Returns:
        The numbers of the trials failed.
    """
    host = socket.gethostname()
    storage = study._storage  # the storage's own API: the study exposes no other way to fail
    # A retry starts with the killed trial's attributes (its dead worker's among them) until its
    # own worker writes its own, a moment after it starts running.
    settled = datetime.datetime.now() - datetime.timedelta(seconds=_SETTLE_SECONDS)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(WORKER_ATTR, ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        retry = "failed_trial" in trial.system_attrs
        if retry and trial.datetime_start is not None and trial.datetime_start > settled:
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        callback = storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
        logger.info("trial %d was killed with its sweep; queued again", trial.number)
    return failed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_trials(study: optuna.Study) -> int:
    """Trials of the study that are complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))
