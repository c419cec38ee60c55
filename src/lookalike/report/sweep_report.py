"""A sweep's page and table: every trial, the optimisation history and parameter importances.

``sweep.html`` holds a summary, the trials table (number, state, score, parameters, epochs run,
seconds, run folder), the optimisation history (each finished trial's score and the best so far)
and, once two trials completed, the parameters' importances (fANOVA, Hutter et al., "An
Efficient Approach for Assessing Hyperparameter Importance", ICML 2014, as
``optuna.importance`` computes it), drawn with matplotlib.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from lookalike.report.html import render_page
from lookalike.report.markup import escape, image_tag, note, table
from lookalike.report.plots import figure_to_png
from lookalike.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

TRIAL_COLUMNS = ("number", "state", "value", "epochs_run", "best_epoch", "seconds", "run",
                 "retry_of", "error")


def param_names(trials: Sequence[FrozenTrial]) -> list[str]:
    """Every parameter any trial sampled, in first-seen order."""
    names: list[str] = []
    for trial in trials:
        names += [name for name in trial.params if name not in names]
    return names


def trial_rows(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[list[Any]]]:
    """Headers and one row per trial: :data:`TRIAL_COLUMNS` then each parameter (blank when a
    trial did not sample it)."""
    names = param_names(trials)
    rows = []
    for trial in trials:
        seconds = None if trial.duration is None else round(trial.duration.total_seconds(), 1)
        rows.append([
            trial.number, trial.state.name, trial.value, trial.user_attrs.get("epochs_run"),
            trial.user_attrs.get("best_epoch"), seconds, trial.user_attrs.get("run"),
            trial.system_attrs.get("failed_trial"), trial.user_attrs.get("error"),
            *[trial.params.get(name) for name in names],
        ])
    return [*TRIAL_COLUMNS, *names], rows


def write_trials_csv(trials: Sequence[FrozenTrial], path: str | Path) -> Path:
    """``trials.csv``: :func:`trial_rows`, blanks for missing values; written atomically."""
    headers, rows = trial_rows(trials)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if value is None else value for value in row] for row in rows])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def history_chart(trials: Sequence[FrozenTrial], maximize: bool) -> Figure | None:
    """Each complete trial's score by trial number and the best so far; pruned trials marked at
    their last reported value."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if not complete and not pruned:
        return None
    figure = Figure(figsize=(7, 3.5))
    axes = figure.add_subplot()
    if complete:
        numbers = [t.number for t in complete]
        values = [float(t.value) for t in complete]  # type: ignore[arg-type]
        best, running = [], None
        for value in values:
            running = value if running is None else (max if maximize else min)(running, value)
            best.append(running)
        axes.scatter(numbers, values, label="complete", color="tab:blue")
        axes.step(numbers, best, where="post", label="best so far", color="tab:red")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        axes.scatter([t.number for t in pruned], last, label="pruned (last epoch)",
                     marker="x", color="tab:gray")
    axes.set_xlabel("trial")
    axes.set_ylabel("objective")
    axes.set_title("Optimisation history")
    axes.legend(loc="best", fontsize="small")
    return figure


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances (fANOVA) over complete trials; empty below two of them or with no
    parameter that every complete trial sampled."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as error:
        logger.warning("no parameter importances: %s", error)
        return {}


def importance_chart(values: Mapping[str, float]) -> Figure:
    """Horizontal bars, most important on top."""
    names = list(values)[::-1]
    figure = Figure(figsize=(6, 0.4 * len(names) + 1.2))
    axes = figure.add_subplot()
    axes.barh(names, [values[name] for name in names], color="tab:green")
    axes.set_xlabel("importance (fANOVA, normalised)")
    axes.set_title("Parameter importances")
    return figure


def _shown(value: Any) -> Any:
    """Small floats (learning rates) with significant digits: the table's 4 decimals lose them."""
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        return f"{value:.3g}"
    return value


def write_sweep_report(
    study: optuna.Study, path: str | Path, summary: Mapping[str, Any] | None = None
) -> Path:
    """Write ``sweep.html`` for ``study`` (atomically) and return its path."""
    trials = study.get_trials()
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    headers, rows = trial_rows(trials)
    rows = [[_shown(value) for value in row] for row in rows]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    overview = [[key, value] for key, value in (summary or {}).items()]
    if best is not None:
        overview += [["best trial", best.number], ["best value", best.value],
                     *[[f"best {name}", _shown(value)] for name, value in best.params.items()]]
    parts = [("summary", "Summary", table(["", "value"], overview) if overview else
              note("no trial finished yet"))]
    bold = [[best is not None and row[0] == best.number for _ in row] for row in rows]
    parts.append(("trials", "Trials", table(headers, rows, "trials", bold)))
    chart = history_chart(trials, maximize)
    parts.append(("history", "Optimisation history",
                  image_tag(figure_to_png(chart), alt="optimisation history") if chart else
                  note("no trial finished yet")))
    found = importances(study)
    parts.append(("importance", "Parameter importances",
                  image_tag(figure_to_png(importance_chart(found)), alt="importances")
                  + table(["parameter", "importance"], [[k, v] for k, v in found.items()])
                  if found else note("importances need two complete trials")))
    direction = "maximised" if maximize else "minimised"
    subtitle = escape(f"{len(trials)} trials of study {study.study_name!r}, objective {direction}")
    atomic_write_text(path, render_page("Sweep", subtitle, parts))
    return Path(path)


def pruning_savings(trials: Sequence[FrozenTrial], max_epochs: int) -> tuple[int, float, float]:
    """Epochs pruned trials did not run, their estimated seconds, and the seconds trials ran.

    Seconds per epoch are measured on the finished trials (their wall time over their epochs;
    a retried trial's time is its last session's, its epochs all it ran).

    Returns:
        ``(spared epochs, spared seconds, seconds of every finished trial)``.
    """
    finished = [t for t in trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.duration is not None]
    seconds = sum(t.duration.total_seconds() for t in finished)  # type: ignore[union-attr]
    epochs = sum(int(t.user_attrs.get("epochs_run", 0)) for t in finished)
    per_epoch = seconds / epochs if epochs else 0.0
    spared = sum(max(0, max_epochs - int(t.user_attrs.get("epochs_run", max_epochs)))
                 for t in finished if t.state == TrialState.PRUNED)
    return spared, spared * per_epoch, seconds
