"""Read the files an ``evaluate`` or ``train`` job leaves in its run folder, for the report.

The layout and file names belong to :mod:`lookalike.runs`. The folder is first verified against
its manifest (a folder without one was never finished). Every file is optional; what is absent is
listed in :attr:`RunFolder.missing` so the report can say so. A file that exists but cannot be
parsed is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lookalike.embed.store import EmbeddingSet
from lookalike.ranking import Ranking
from lookalike.runs import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SKIPPED_FILE,
    VARIANTS_FILE,
    RunRecord,
    RunSettings,
)

RESULTS_COLUMNS = ("query_id", "rank", "gallery_id", "gallery_path", "score")


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
        skipped: ``skipped.csv``.
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

    @property
    def record(self) -> RunRecord:
        return RunRecord(self.root)

    def load_embeddings(self, key: str) -> EmbeddingSet | None:
        """The :class:`EmbeddingSet` named under ``key``, None when run.json names none."""
        return self.record.load_embeddings(key)

    def load_ranking(self) -> Ranking | None:
        """The run's saved ranking of its queries against its gallery, None when there is none."""
        return self.record.load_ranking()

    def resolve_image(self, path: str | None) -> Path | None:
        """An image path as written by a job: absolute, else relative to the run folder or cwd."""
        if not path:
            return None
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or not (self.root / candidate).exists():
            return candidate
        return self.root / candidate


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable CSV file ({error}); rewrite or remove it"
        ) from error


def load_run_folder(
    run_dir: str | Path, verify: bool = True, ignore: tuple[str, ...] = ()
) -> RunFolder:
    """Read every file of the run folder layout that exists.

    Args:
        run_dir: The run folder.
        verify: Check it against its manifest first; only the job still writing the folder
            (which reports on it before its manifest exists) passes False.
        ignore: Files the check leaves out (a report about to be rewritten).

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder, or holds none of run.json, metrics.json
            and results.csv.
        ValueError: A file exists but is malformed; or (an ``ArtefactError``) the folder is
            unfinished or a file differs from the manifest.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist; pass the folder of a run")
    folder = RunFolder(root)
    if verify:
        folder.record.verify(ignore)
    record = folder.record
    names = (RUN_FILE, METRICS_FILE, VARIANTS_FILE, RESULTS_FILE, HISTORY_FILE, CONFIG_FILE,
             SKIPPED_FILE)
    folder.missing = [name for name in names if not record.path(name).is_file()]
    if {RUN_FILE, METRICS_FILE, RESULTS_FILE} <= set(folder.missing):
        raise FileNotFoundError(
            f"{root} is not a run folder: it has none of {RUN_FILE}, {METRICS_FILE}, "
            f"{RESULTS_FILE}; run `lookalike evaluate` or `lookalike train` first"
        )
    present = {name: record.path(name) for name in names if name not in folder.missing}
    folder.settings = record.read_settings()
    folder.metrics = record.read_metrics()
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
    folder.skipped = record.read_skipped()
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
