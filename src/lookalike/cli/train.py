"""``lookalike train``: fine-tune an embedder from a YAML config with dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import console, friendly_errors, metrics_table
from lookalike.config import resolve_config
from lookalike.pipeline.after_training import evaluate_trained_model
from lookalike.report import build_report
from lookalike.train.config import TrainConfig
from lookalike.train.run import run_training


@friendly_errors
def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides: optim.lr=1e-4 trainer.max_epochs=5 finetune.strategy=lora.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run folder (resumes from its last checkpoint).")] = None,
    test: Annotated[bool, typer.Option(help="Evaluate the best model on the protocol's test split (run/test/).")] = True,
    report: Annotated[bool, typer.Option(help="Write report.html into the run folder.")] = True,
) -> None:
    """Train with Lightning; validate retrieval each epoch; keep the best checkpoint; export it."""
    dotted = [f"output={output}"] if output else []
    resolved = resolve_config(TrainConfig, config, [*dotted, *(overrides or [])])
    outcome = run_training(resolved)
    if outcome.metrics:
        console.print(metrics_table(outcome.metrics, title=f"Best validation epoch ({outcome.best_epoch})"))
    console.print(f"best checkpoint: [bold]{outcome.best_checkpoint}[/]")
    console.print(f"exported model:  [bold]{outcome.model_dir}[/]  (use --checkpoint {outcome.model_dir})")
    if test:
        evaluation = evaluate_trained_model(resolved, outcome)
        if evaluation.metrics:
            console.print(metrics_table(evaluation.metrics, title="Test split, best model"))
        console.print(f"test run:        [bold]{evaluation.output}[/]")
    if report:
        console.print(f"report:          [bold]{build_report(outcome.output)}[/]")
