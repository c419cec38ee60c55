"""Read the files an ``evaluate`` or ``train`` job leaves in its run folder.

A run folder may hold::

    run.json       {"kind", "query_embeddings", "gallery_embeddings", "train_embeddings"?,
                    "exclude_self", "metric", "threshold", "k"} (embedding paths may be relative)
    metrics.json   flat {"recall@1": ..., "map@r": ..., "n_queries": ...}
    variants.csv   one row per post-processing variant: "variant" + metric columns
    results.csv    query_id, rank, gallery_id, gallery_path, score (the served ranking)
    history.csv    epoch, step, train/loss, val/map@r, ... (training only)
    config.yaml    the resolved configuration
    skipped.json   [{"id", "path", "reason"}] images that could not be read

Every file is optional; what is absent is listed in :attr:`RunFolder.missing` so the report can
say so. A file that exists but cannot be parsed is an error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lookalike.embed.store import EmbeddingSet
from lookalike.index.metrics import get_metric

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
VARIANTS_FILE = "variants.csv"
RESULTS_FILE = "results.csv"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
SKIPPED_FILE = "skipped.json"
RUN_KINDS = ("evaluate", "train")
RESULTS_COLUMNS = ("query_id", "rank", "gallery_id", "gallery_path", "score")
EMBEDDING_KEYS = ("query_embeddings", "gallery_embeddings", "train_embeddings")


@dataclass
class RunSettings:
    """The validated contents of ``run.json``."""

    kind: str
    query_embeddings: str | None
    gallery_embeddings: str | None
    train_embeddings: str | None
    exclude_self: bool
    metric: str
    threshold: float | None
    k: int


@dataclass
class RunFolder:
    """Everything found in a run folder; ``None`` for each absent file.

    Attributes:
        root: The run folder.
        settings: ``run.json``.
        metrics: ``metrics.json``.
        variants: ``variants.csv``.
        results: ``results.csv`` with string ids and int ranks, sorted by query then rank.
        history: ``history.csv``.
        config_text: ``config.yaml`` as text.
        skipped: ``skipped.json``.
        missing: Names of the absent files.
    """

    root: Path
    settings: RunSettings | None = None
    metrics: dict[str, Any] | None = None
    variants: pd.DataFrame | None = None
    results: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    config_text: str | None = None
    skipped: list[dict[str, Any]] | None = None
    missing: list[str] = field(default_factory=list)

    def embedding_path(self, key: str) -> Path | None:
        """The folder ``run.json`` gives under ``key``, resolved against the run folder."""
        if key not in EMBEDDING_KEYS:
            raise ValueError(
                f"unknown embedding key {key!r}; valid names: {', '.join(EMBEDDING_KEYS)}"
            )
        value = None if self.settings is None else getattr(self.settings, key)
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def load_embeddings(self, key: str) -> EmbeddingSet | None:
        """The :class:`EmbeddingSet` named under ``key``, None when run.json names none."""
        path = self.embedding_path(key)
        return None if path is None else EmbeddingSet.load(path)

    def resolve_image(self, path: str | None) -> Path | None:
        """An image path as written by a job: absolute, else relative to the run folder or cwd."""
        if not path:
            return None
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or not (self.root / candidate).exists():
            return candidate
        return self.root / candidate


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rewrite or remove it") from error


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable CSV file ({error}); rewrite or remove it"
        ) from error


def parse_settings(raw: Any, path: Path) -> RunSettings:
    """Validate the object read from ``run.json``; a ValueError names the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    kind = raw.get("kind", "evaluate")
    if kind not in RUN_KINDS:
        raise ValueError(f"{path}: unknown run kind {kind!r}; valid names: {', '.join(RUN_KINDS)}")
    metric = str(raw.get("metric", "cosine"))
    try:
        get_metric(metric)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    threshold = raw.get("threshold")
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise ValueError(f"{path}: threshold must be a number or null, got {threshold!r}")
    k = raw.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{path}: k must be a positive integer, got {k!r}")
    return RunSettings(
        kind=kind,
        query_embeddings=raw.get("query_embeddings"),
        gallery_embeddings=raw.get("gallery_embeddings"),
        train_embeddings=raw.get("train_embeddings"),
        exclude_self=bool(raw.get("exclude_self", False)),
        metric=metric,
        threshold=None if threshold is None else float(threshold),
        k=k,
    )


def load_run_folder(run_dir: str | Path) -> RunFolder:
    """Read every file of the run folder contract that exists.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder, or holds none of run.json, metrics.json
            and results.csv.
        ValueError: A file exists but is malformed.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist; pass the folder of a run")
    folder = RunFolder(root)
    files = {
        name: root / name
        for name in (RUN_FILE, METRICS_FILE, VARIANTS_FILE, RESULTS_FILE, HISTORY_FILE,
                     CONFIG_FILE, SKIPPED_FILE)
    }
    folder.missing = [name for name, path in files.items() if not path.is_file()]
    if {RUN_FILE, METRICS_FILE, RESULTS_FILE} <= set(folder.missing):
        raise FileNotFoundError(
            f"{root} is not a run folder: it has none of {RUN_FILE}, {METRICS_FILE}, "
            f"{RESULTS_FILE}; "
            "run `lookalike evaluate` or `lookalike train` first"
        )
    present = {name: path for name, path in files.items() if name not in folder.missing}
    if RUN_FILE in present:
        folder.settings = parse_settings(_read_json(present[RUN_FILE]), present[RUN_FILE])
    if METRICS_FILE in present:
        metrics = _read_json(present[METRICS_FILE])
        if not isinstance(metrics, dict):
            raise ValueError(f"{present[METRICS_FILE]} must hold a flat JSON object of metrics")
        folder.metrics = metrics
    if VARIANTS_FILE in present:
        folder.variants = _read_csv(present[VARIANTS_FILE])
        if "variant" not in folder.variants.columns:
            raise ValueError(f"{present[VARIANTS_FILE]} needs a 'variant' column")
    if RESULTS_FILE in present:
        folder.results = _read_results(present[RESULTS_FILE])
    if HISTORY_FILE in present:
        folder.history = _read_csv(present[HISTORY_FILE])
    if CONFIG_FILE in present:
        folder.config_text = present[CONFIG_FILE].read_text(encoding="utf-8")
    if SKIPPED_FILE in present:
        skipped = _read_json(present[SKIPPED_FILE])
        if not isinstance(skipped, list):
            raise ValueError(f"{present[SKIPPED_FILE]} must hold a JSON list of skipped images")
        folder.skipped = skipped
    return folder


def _read_results(path: Path) -> pd.DataFrame:
    frame = _read_csv(
        path,
        dtype={"query_id": str, "gallery_id": str, "gallery_path": str},
        keep_default_na=False,
        na_values={"score": [""]},
    )
    absent = [column for column in RESULTS_COLUMNS if column not in frame.columns]
    if absent:
        raise ValueError(f"{path} lacks the column(s) {', '.join(absent)}")
    ranks = pd.to_numeric(frame["rank"], errors="coerce")
    if ranks.isna().any():
        raise ValueError(f"{path}: the rank column must hold integers (1 = best)")
    frame["rank"] = ranks.astype(int)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame.sort_values(["query_id", "rank"], kind="stable").reset_index(drop=True)
