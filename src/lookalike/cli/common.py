"""What every verb shares: one-line errors, the Rich console, progress bars, logging, ``key=value``
parsing."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from lookalike.utils.progress import ProgressFactory

console = Console()
error_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

# Errors a user can fix: shown as one line, never as a traceback. EOFError is a file that ends
# early (an empty .npy): left to Click it would print only "Aborted!".
USER_ERRORS = (
    ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError, EOFError
)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, the first line of ``message`` only."""
    lines = message.strip().splitlines()
    error_console.print(
        f"[bold red]error:[/] {lines[0] if lines else 'failed'}", highlight=False, soft_wrap=True
    )


def friendly_errors(command: F) -> F:
    """Run ``command``; a user error prints ``error: <one line>`` and exits with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _configure_logging()
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            if isinstance(error, EOFError):
                print_error(f"a file ended early (empty or truncated): {error}")
            else:
                print_error(str(error) or repr(error))
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


class OneLineUsageErrors(TyperGroup):
    """The verbs' group, printing usage errors (a missing argument, ``-k abc``, an unknown option)
    as one ``error:`` line with exit status 2, like every other user error, instead of a panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        arguments = list(sys.argv[1:] if args is None else args)
        if not standalone_mode or not arguments:  # no arguments at all: the help, as Typer does
            return super().main(arguments, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(arguments, prog_name, complete_var, False, **extra)
        except typer.TyperException as error:  # Click's usage errors, vendored by Typer
            context = getattr(error, "ctx", None)
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            print_error(f"{error.format_message()}{hint}")
            sys.exit(error.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


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


def dotted_settings(options: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """``key=value`` overrides for the options given (None: not given), then ``overrides``.

    Raises:
        ValueError: An override sets a key an option already set (``--output A output=B``):
            which one should win is a guess, so neither does.
    """
    given = {key: value for key, value in options.items() if value is not None}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in given:
            raise ValueError(
                f"{key} is set twice, by an option ({given[key]}) and by {item!r}; give it once"
            )
    return [*(f"{key}={value}" for key, value in given.items()), *overrides]


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
