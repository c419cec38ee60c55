"""What every verb shares: one-line errors, the Rich console, progress bars, logging, ``key=value``
parsing."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lookalike.utils.progress import ProgressFactory

console = Console()
error_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

# Errors a user can fix: shown as one line, never as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)


def friendly_errors(command: F) -> F:
    """Run ``command``; a user error prints ``error: <one line>`` and exits with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _configure_logging()
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            error_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def progress_bars() -> Iterator[ProgressFactory]:
    """Rich progress bars on stderr for the block; yields the factory pipeline functions take.

    Each call ``factory(description, total)`` adds a bar and returns its advance callback, so a
    job with several long steps (embedding, ranking, searching) shows one bar per step. The bars
    start with the first step, so a library that draws its own display before that (Lightning's
    training bar) is not disturbed.
    """
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=error_console, transient=True)

    def factory(description: str, total: int) -> Callable[[int], None]:
        if not bar.live.is_started:
            bar.start()
        task = bar.add_task(description, total=total)
        return lambda advance: bar.advance(task, advance)

    try:
        yield factory
    finally:
        bar.stop()


def parse_key_values(items: Sequence[str]) -> dict[str, Any]:
    """``["nlist=64", "metric=l2"]`` → ``{"nlist": 64, "metric": "l2"}`` (values parsed as YAML)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not of the form key=value")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def metrics_table(metrics: dict[str, float], title: str = "Retrieval metrics") -> Table:
    """A two-column table of metric names and values."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def variants_table(variants: dict[str, dict[str, float]]) -> Table:
    """One row per post-processing variant, one column per metric."""
    columns = list(dict.fromkeys(key for row in variants.values() for key in row))
    table = Table(title="Post-processing (each on its own top-depth ranking)")
    table.add_column("variant")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in variants.items():
        table.add_row(name, *(f"{row[c]:.4f}" if c in row else "-" for c in columns))
    return table


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=error_console, show_path=False, show_time=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
