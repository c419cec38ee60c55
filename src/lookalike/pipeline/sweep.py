"""``sweep``: hyper-parameter search over a training config with Optuna.

::

    config.yaml + space.yaml ─► Optuna study in OUT/study.db (SQLite)
        each trial: sample the space (TPE) ─► train() in OUT/trials/NNNN, no test, no report
                    └─ each validation epoch reports trainer.monitor ─► median pruning
    ─► OUT/best_config.yaml, OUT/trials.csv, OUT/sweep.html

The sampler is TPE (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011)
and the pruner the median stopping rule (Golovin et al., "Google Vizier", KDD 2017): after each
epoch a trial whose validation metric is worse than the median of earlier trials at that epoch
stops (:mod:`lookalike.train.pruning`).

Resuming: the study lives in SQLite, so rerunning the same command continues it: finished trials
(complete or pruned) count towards ``trials`` and are never run again. A trial left RUNNING by a
killed sweep (its process is gone, or its heartbeat stopped for ``grace_period`` seconds) is
marked failed and queued again with the same parameters; the retry trains in the failed trial's
folder, so Lightning resumes from its last checkpoint, and keeps its reported epochs.
``jobs`` processes share the study, each taking the next trial (on GPUs, worker ``i`` gets GPU
``i mod count``). The study's storage and the handling of killed trials live in
:mod:`lookalike.pipeline.sweep_study`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from lookalike.config import config_to_yaml, resolve_config
from lookalike.pipeline.sweep_space import SweepParam, as_overrides, load_space, sample
from lookalike.pipeline.sweep_study import (
    FINISHED,
    STUDY_FILE,
    WORKER_ATTR,
    SweepSettings,
    fail_dead_trials,
    finished_trials,
    load_study,
    trial_folder,
)
from lookalike.pipeline.training import train
from lookalike.report.sweep_report import (
    pruning_savings,
    write_sweep_report,
    write_trials_csv,
)
from lookalike.runs import CONFIG_FILE
from lookalike.train.config import TrainConfig, check_config
from lookalike.train.pruning import OptunaPruning
from lookalike.utils.atomic import atomic_write_text
from lookalike.utils.progress import ProgressFactory, tracker

logger = logging.getLogger(__name__)

BEST_CONFIG_FILE = "best_config.yaml"
TRIALS_CSV = "trials.csv"
SWEEP_HTML = "sweep.html"
TRIAL_ERRORS = (ValueError, RuntimeError)  # a trial's own failure: the sweep goes on


@dataclass
class SweepResult:
    """What :func:`sweep` produced.

    Attributes:
        output: The sweep folder.
        trials: Every trial of the study (failed and retried ones included).
        best: The best complete trial (None when none completed).
        best_config: ``best_config.yaml`` (None without a best trial).
        report_path: ``sweep.html``.
        trials_csv: ``trials.csv``.
        saved_epochs: Epochs pruning spared: ``max_epochs`` minus epochs run, over pruned trials.
        saved_seconds: Those epochs at the finished trials' mean seconds per epoch.
        run_seconds: Wall seconds of every finished trial together.
    """

    output: Path
    trials: list[FrozenTrial]
    best: FrozenTrial | None
    best_config: Path | None
    report_path: Path
    trials_csv: Path
    saved_epochs: int = 0
    saved_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclass
class _Objective:
    """Train one trial's config and return its best validation score."""

    config: TrainConfig
    params: list[SweepParam]
    output: Path

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        chosen = sample(self.params, trial)
        folder = trial_folder(self.output, trial)
        overrides = [*as_overrides(chosen), f"output={folder}"]
        trial.set_user_attr("run", str(folder.relative_to(self.output)))
        config = resolve_config(TrainConfig, overrides=overrides, base=self.config)
        monitor = config.trainer.monitor
        pruning = OptunaPruning(trial, monitor)
        try:
            result = train(config, test=False, report=False, callbacks=[pruning])
        except TRIAL_ERRORS as error:
            trial.set_user_attr("error", (str(error).strip().splitlines() or [repr(error)])[0])
            raise
        finally:
            trial.set_user_attr("epochs_run", _epochs_run(folder, pruning))
        outcome = result.training
        score = outcome.metrics.get(monitor.removeprefix("val/"))
        if score is None or not math.isfinite(float(score)):
            raise ValueError(f"trial {trial.number}: the run in {folder} has no finite "
                             f"{monitor} (set data.val_split to validate)")
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        return float(score)


def _epochs_run(folder: Path, pruning: OptunaPruning) -> int:
    """Epochs the trial's run trained, over resumes (rows of its ``history.csv``)."""
    history = folder / "history.csv"
    rows = len(history.read_text().splitlines()) - 1 if history.is_file() else 0
    return max(rows, len(pruning.reported))


def _work(config: TrainConfig, params: list[SweepParam], output: Path, settings: SweepSettings,
          direction: str, worker: int, on_trial: Callable[[], None] | None = None) -> None:
    """One worker: take trials until the study holds ``settings.trials`` finished or running.

    A trial that raises one of :data:`TRIAL_ERRORS` is kept failed (with its ``error``) and the
    sweep goes on, up to ``settings.max_failures`` in a row; any other error stops the worker.
    """
    study = load_study(output, settings, direction, worker)
    objective = _Objective(config, params, output)
    failures: list[FrozenTrial] = []

    def count_failures(study: optuna.Study, trial: FrozenTrial) -> None:
        failures[:] = [*failures, trial] if trial.state == TrialState.FAIL else []

    while True:
        fail_dead_trials(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # heartbeat silent for the grace period
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished = sum(state in FINISHED for state in states)
        if finished >= settings.trials:
            return
        if finished + states.count(TrialState.RUNNING) >= settings.trials:
            # Enough trials are running (in other workers, or left by a sweep killed before it
            # could say which process ran them): wait for them to finish or go stale.
            time.sleep(settings.heartbeat)
            continue
        study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, callbacks=[count_failures])
        if len(failures) > settings.max_failures:
            last = failures[-1]
            raise ValueError(f"{len(failures)} trials failed in a row, the last (trial "
                             f"{last.number}, {last.params}) with: {last.user_attrs.get('error')}")
        if on_trial is not None:
            on_trial()


def _work_in_process(config: TrainConfig, params: list[SweepParam], output: Path,
                     settings: SweepSettings, direction: str, worker: int,
                     gpu: str | None) -> None:
    """A worker process: its own GPU when there are GPUs (set before CUDA starts in it), else its
    share of the CPU threads."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.jobs))
    _work(config, params, output, settings, direction, worker)


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def sweep(
    config: TrainConfig | str | Path,
    space: str | Path | dict[str, Any],
    output: str | os.PathLike[str],
    settings: SweepSettings | None = None,
    overrides: Sequence[str] = (),
    progress: ProgressFactory | None = None,
) -> SweepResult:
    """Search ``space`` around ``config`` with Optuna; see the module docstring.

    Args:
        config: The training config every trial starts from (a TrainConfig or a YAML file).
        space: The search space (a YAML file or mapping, :mod:`lookalike.pipeline.sweep_space`).
        output: The sweep folder (``study.db``, ``trials/``, results); rerun to resume.
        settings: Trials, parallel jobs, seed, pruning and retry settings.
        overrides: Dotted ``key=value`` settings applied to ``config`` for every trial.
        progress: Receives one step per finished trial.

    Returns:
        The study's trials, the best one and the files written.
    """
    settings = settings or SweepSettings()
    if settings.trials < 1 or settings.jobs < 1:
        raise ValueError(f"trials and jobs must be >= 1, got {settings.trials} and "
                         f"{settings.jobs}")
    if isinstance(config, TrainConfig):
        base = resolve_config(TrainConfig, overrides=overrides, base=config)
    else:
        base = resolve_config(TrainConfig, config, overrides)
    params = load_space(space)
    check_config(base)
    if base.data.val_split == "none":
        raise ValueError("a sweep scores trials on validation: set data.val_split (val or test)")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    direction = "maximize" if base.trainer.monitor_mode == "max" else "minimize"
    study = load_study(folder, settings, direction)
    if study.direction != optuna.study.StudyDirection[direction.upper()]:
        raise ValueError(f"the study in {folder / STUDY_FILE} was made to "
                         f"{study.direction.name.lower()}; trainer.monitor_mode asks to {direction}")
    advance = tracker(progress, "sweep trials", settings.trials)
    shown = [min(finished_trials(study), settings.trials)]
    advance(shown[0])

    def on_trial() -> None:
        now = min(finished_trials(study), settings.trials)
        advance(now - shown[0])
        shown[0] = now

    if settings.jobs == 1:
        _work(base, params, folder, settings, direction, 0, on_trial)
    else:
        _run_workers(base, params, folder, settings, direction)
        on_trial()
    return write_sweep_outputs(folder, study, base.trainer.max_epochs)


def _run_workers(config: TrainConfig, params: list[SweepParam], output: Path,
                 settings: SweepSettings, direction: str) -> None:
    context = multiprocessing.get_context("spawn")
    gpus = _visible_gpus()
    workers = [
        context.Process(target=_work_in_process,
                        args=(config, params, output, settings, direction, worker,
                              gpus[worker % len(gpus)] if gpus else None))
        for worker in range(settings.jobs)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    failed = [str(i) for i, process in enumerate(workers) if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"sweep workers {', '.join(failed)} failed (see their log); rerun "
                           f"the same command to resume the study in {output}")


def write_sweep_outputs(output: Path, study: optuna.Study, max_epochs: int) -> SweepResult:
    """``best_config.yaml``, ``trials.csv`` and ``sweep.html`` of the study in ``output``."""
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    best_config = None
    resolved = output / str(best.user_attrs.get("run", "")) / CONFIG_FILE if best else None
    if resolved is not None and resolved.is_file():
        config = resolve_config(TrainConfig, resolved)
        config.output = str(output / "best")
        best_config = output / BEST_CONFIG_FILE
        atomic_write_text(best_config, config_to_yaml(config))
    saved_epochs, saved_seconds, run_seconds = pruning_savings(trials, max_epochs)
    trials_csv = write_trials_csv(trials, output / TRIALS_CSV)
    report = write_sweep_report(
        study, output / SWEEP_HTML,
        summary={"trials finished": len([t for t in trials if t.state in FINISHED]),
                 "pruned": len([t for t in trials if t.state == TrialState.PRUNED]),
                 "epochs spared by pruning": saved_epochs,
                 "training seconds": round(run_seconds),
                 "seconds spared by pruning (estimated)": round(saved_seconds)},
    )
    return SweepResult(output, trials, best, best_config, report, trials_csv, saved_epochs,
                       saved_seconds, run_seconds)
