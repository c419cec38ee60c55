"""``lookalike train``: fine-tune an embedder from a YAML config with dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import (
    console,
    dotted_settings,
    friendly_errors,
    metrics_table,
    progress_bars,
)
from lookalike.config import resolve_config
from lookalike.pipeline.training import train as run_train
from lookalike.train.config import TrainConfig


@friendly_errors
def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides: optim.lr=1e-4 trainer.max_epochs=5 finetune.strategy=lora.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run folder (resumes from its last checkpoint).")] = None,
    test: Annotated[bool, typer.Option(help="Evaluate the best model on the protocol's test split (run/test/).")] = True,
    report: Annotated[bool, typer.Option(help="Write report.html into the run folder.")] = True,
) -> None:
    """Train with Lightning; validate retrieval each epoch; keep the best checkpoint; export it."""
    resolved = resolve_config(
        TrainConfig, config, dotted_settings({"output": output}, overrides or [])
    )
    with progress_bars() as progress:
        result = run_train(resolved, test=test, report=report, progress=progress)
    outcome = result.training
    if not outcome.is_global_zero:  # a DDP worker: rank 0 prints the run
        return
    if outcome.metrics:
        console.print(metrics_table(outcome.metrics, title=f"Best validation epoch ({outcome.best_epoch})"))
    console.print(f"best checkpoint: [bold]{outcome.best_checkpoint}[/]")
    console.print(f"exported model:  [bold]{outcome.model_dir}[/]  (use --checkpoint {outcome.model_dir})")
    if result.test is not None:
        if result.test.metrics:
            console.print(metrics_table(result.test.metrics, title="Test split, best model"))
        console.print(f"test run:        [bold]{result.test.output}[/]")
    if result.report_path is not None:
        console.print(f"report:          [bold]{result.report_path}[/]")
