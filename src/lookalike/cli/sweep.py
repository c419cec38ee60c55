"""``lookalike sweep``: Optuna search over a training config's settings (see
:mod:`lookalike.pipeline.sweep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, progress_bars


@friendly_errors
def sweep(
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides applied to every trial: trainer.max_epochs=3.")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Training config every trial starts from (see configs/).")] = ...,  # type: ignore[assignment]
    space: Annotated[Path, typer.Option("--space", "-s", help="YAML search space: dotted keys -> {type: float|int|categorical, ...}.")] = ...,  # type: ignore[assignment]
    output: Annotated[Path, typer.Option("--output", "-o", help="Sweep folder (study.db, trials/); rerun to resume.")] = Path("runs/sweep"),
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials (complete or pruned) wanted in the study.")] = 10,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials run at once, in processes sharing the study (one GPU each when there are GPUs).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    random_trials: Annotated[int, typer.Option(help="Trials sampled at random before TPE models the rest.")] = 4,
    startup_trials: Annotated[int, typer.Option(help="Trials the median pruner lets finish before pruning.")] = 3,
    warmup_epochs: Annotated[int, typer.Option(help="Epochs of each trial never pruned.")] = 0,
    grace_period: Annotated[int, typer.Option(help="Seconds without a heartbeat before a running trial counts as killed.")] = 120,
) -> None:
    """Search hyper-parameters with Optuna (TPE, median pruning per epoch); resumable."""
    try:  # optuna is the optional "sweep" extra: every other verb works without it
        from lookalike.pipeline.sweep import SweepSettings
        from lookalike.pipeline.sweep import sweep as run_sweep
    except ModuleNotFoundError as error:
        raise ValueError(f"lookalike sweep needs {error.name}: pip install 'lookalike[sweep]'") from None
    settings = SweepSettings(trials=trials, jobs=jobs, seed=seed, random_trials=random_trials,
                             startup_trials=startup_trials,
                             warmup_epochs=warmup_epochs, grace_period=grace_period)
    with progress_bars() as progress:
        result = run_sweep(config, space, output, settings, overrides or [], progress)
    if result.best is not None:
        console.print(f"best trial {result.best.number}: {result.best.value:.4f}  "
                      f"{result.best.params}")
        console.print(f"best config:  [bold]{result.best_config}[/]")
    console.print(f"pruning spared {result.saved_epochs} epochs "
                  f"(~{result.saved_seconds:.0f} s of {result.run_seconds:.0f} s trained)")
    console.print(f"trials table: [bold]{result.trials_csv}[/]")
    console.print(f"report:       [bold]{result.report_path}[/]")
