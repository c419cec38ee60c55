"""The ablation table: many run folders side by side, as CSV and an HTML page with a bar chart.

One row per run folder (``lookalike train`` or ``lookalike evaluate``), read through
:class:`~lookalike.runs.RunRecord` after its manifest is verified:

- what was run, from its ``config.yaml``: model (backbone or checkpoint), pooling, head, loss and
  fine-tuning strategy (training runs);
- its metrics: an evaluation's ``metrics.json``; for a training run the test split's metrics
  (``test_metrics`` of ``run.json``) and the best validation epoch's as ``val/...``;
- its times: ``train_seconds`` (the last training session) and ``eval_seconds`` (the test
  evaluation), where the run recorded them.

A value a run does not have is left blank.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from lookalike.report.html import render_page
from lookalike.report.markup import escape, image_tag, note, table
from lookalike.report.plots import figure_to_png
from lookalike.runs import CONFIG_FILE, RUN_FILE, RunRecord
from lookalike.utils.atomic import atomic_write_text

COMPARE_CSV = "compare.csv"
COMPARE_HTML = "compare.html"
DESCRIPTION_COLUMNS = ("run", "kind", "model", "pooling", "head", "loss", "finetune")
TIME_COLUMNS = ("train_seconds", "eval_seconds")
CHARTED = ("recall@1", "map@r", "map", "map@5")
_LEADING = ("recall@1", "map@r", "map")


@dataclass
class Comparison:
    """What :func:`compare_runs` wrote.

    Attributes:
        columns: Column names, in table order.
        rows: One mapping per run (``None`` for a value the run does not have).
        csv_path: ``compare.csv``.
        html_path: ``compare.html``.
    """

    columns: list[str]
    rows: list[dict[str, Any]]
    csv_path: Path
    html_path: Path


def _read_config(record: RunRecord) -> dict[str, Any]:
    path = record.path(CONFIG_FILE)
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    return loaded if isinstance(loaded, dict) else {}


def _loss_name(loss: Any) -> str | None:
    """``"arcface"``, or ``"hybrid(arcface+bce)"`` for a weighted sum."""
    if isinstance(loss, str):
        return loss
    if not isinstance(loss, dict):
        return None
    name = loss.get("name")
    parts = loss.get("parts")
    if name == "hybrid" and isinstance(parts, list):
        inner = [part.get("name") if isinstance(part, dict) else str(part) for part in parts]
        return f"hybrid({'+'.join(str(p) for p in inner)})"
    return None if name is None else str(name)


def _finetune(spec: Any) -> str | None:
    """The strategy, with its depth where it has one (``"last_n:6"``)."""
    if not isinstance(spec, dict) or "strategy" not in spec:
        return None
    strategy = str(spec["strategy"])
    if strategy in ("last_n", "freeze_then_unfreeze"):
        return f"{strategy}:{spec.get('last_n')}"
    if strategy == "lora":
        return f"lora:r{spec.get('lora_r')}"
    return strategy


def _numbers(values: Any, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a flat metrics mapping, keys prefixed."""
    if not isinstance(values, dict):
        return {}
    return {
        f"{prefix}{key}": float(value) for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def run_row(folder: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """One row of the table for the run folder ``folder``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: One line naming ``folder``: not a run folder (no ``run.json``), unfinished or
            changed since it was written (``verify``), or a file of it unreadable.
    """
    record = RunRecord(folder)
    if not record.root.is_dir():
        raise FileNotFoundError(f"run folder {record.root} does not exist")
    if not record.path(RUN_FILE).is_file():
        raise ValueError(f"{record.root} is not a run folder (no {RUN_FILE}); give folders "
                         "written by lookalike train or lookalike evaluate")
    if verify:
        record.verify()
    settings = record.read_settings()
    raw = record.read_raw()
    config = _read_config(record)
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    checkpoint = model.get("checkpoint")
    row: dict[str, Any] = {
        "kind": settings.kind if settings else None,
        "model": f"checkpoint:{checkpoint}" if checkpoint else model.get("backbone"),
        "pooling": None if checkpoint else model.get("pool"),
        "head": None if checkpoint else model.get("head"),
        "loss": _loss_name(config.get("loss")),
        "finetune": _finetune(config.get("finetune")),
        "train_seconds": raw.get("seconds_this_session"),
        "eval_seconds": raw.get("test_seconds", raw.get("seconds")),
    }
    metrics = record.read_metrics() or {}
    if row["kind"] == "train":
        row.update(_numbers(raw.get("test_metrics")))
        row.update(_numbers(metrics, "val/"))
    else:
        row.update(_numbers(metrics))
    return row


def _labels(folders: Sequence[Path]) -> list[str]:
    """Each folder relative to the folders' common parent (unique, short)."""
    resolved = [folder.resolve() for folder in folders]
    if len(resolved) == 1:
        return [resolved[0].name]
    common = Path(os.path.commonpath(resolved))
    return [folder.relative_to(common).as_posix() or folder.name for folder in resolved]


def _metric_order(keys: set[str]) -> list[str]:
    """Test metrics first (Recall@1, MAP@R, mAP, then by name), then the ``val/`` ones."""
    def rank(key: str) -> tuple[int, int, str]:
        base = key.removeprefix("val/")
        lead = _LEADING.index(base) if base in _LEADING else len(_LEADING)
        return (key.startswith("val/"), lead, base)

    return sorted(keys, key=rank)


def charted_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metrics of :data:`CHARTED` some run has: test metrics, else validation ones (runs
    trained without a test evaluation, such as a sweep's trials)."""
    for names in (CHARTED, tuple(f"val/{name}" for name in CHARTED)):
        found = [m for m in names if any(row.get(m) is not None for row in rows)]
        if found:
            return found
    return []


def comparison_chart(labels: Sequence[str], rows: Sequence[dict[str, Any]]) -> Figure | None:
    """Grouped bars: one group per run, one bar per charted metric it has."""
    metrics = charted_metrics(rows)
    if not metrics:
        return None
    figure = Figure(figsize=(max(6.0, 0.9 * len(labels) * len(metrics) / 2 + 3), 4))
    axes = figure.add_subplot()
    width = 0.8 / len(metrics)
    positions = np.arange(len(labels))
    for i, metric in enumerate(metrics):
        values = [np.nan if row.get(metric) is None else row[metric] for row in rows]
        axes.bar(positions + (i - (len(metrics) - 1) / 2) * width, values, width, label=metric)
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize="small")
    axes.set_ylabel("metric")
    axes.set_title("Runs compared")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def compare_runs(
    folders: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], verify: bool = True
) -> Comparison:
    """Read every run folder and write ``compare.csv`` and ``compare.html`` into ``output``.

    Args:
        folders: Run folders (``lookalike train`` / ``lookalike evaluate`` outputs).
        output: Folder of the two files (created when missing).
        verify: Check each run against its manifest first.

    Returns:
        The table and the two files.
    """
    paths = [Path(folder) for folder in folders]
    if not paths:
        raise ValueError("give at least one run folder to compare")
    rows = [run_row(path, verify) for path in paths]
    for label, row in zip(_labels(paths), rows, strict=True):
        row["run"] = label
    metric_keys = {key for row in rows for key in row} - {*DESCRIPTION_COLUMNS, *TIME_COLUMNS}
    columns = [*DESCRIPTION_COLUMNS, *_metric_order(metric_keys), *TIME_COLUMNS]
    target = Path(output)
    target.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    csv_path = target / COMPARE_CSV
    atomic_write_text(csv_path, buffer.getvalue())
    html_path = target / COMPARE_HTML
    atomic_write_text(html_path, _page(columns, rows))
    return Comparison(columns, rows, csv_path, html_path)


def _page(columns: list[str], rows: list[dict[str, Any]]) -> str:
    cells = [[row.get(column) for column in columns] for row in rows]
    bold = [[False] * len(columns) for _ in rows]
    for j, column in enumerate(columns):
        values = [value for value in (row[j] for row in cells) if isinstance(value, float)]
        if column in CHARTED or column.removeprefix("val/") in CHARTED:
            best = max(values) if values else None
            for i, row in enumerate(cells):
                bold[i][j] = best is not None and row[j] == best
    chart = comparison_chart([str(row["run"]) for row in rows], rows)
    parts = [
        ("table", "Runs", table(columns, [["" if v is None else v for v in row] for row in cells],
                                "runs", bold)
         + note("Blank: the run has no such value. Metrics without a prefix are the test split's "
                "(an evaluation's metrics.json, a training run's test evaluation); val/ are the "
                "best validation epoch's. Best value of each charted metric in bold.")),
        ("chart", "Chart", image_tag(figure_to_png(chart), alt="metrics by run") if chart
         else note("no run has Recall@1, MAP@R, mAP or MAP@5 (test or val)")),
    ]
    return render_page("Runs compared", escape(f"{len(rows)} runs"), parts)
