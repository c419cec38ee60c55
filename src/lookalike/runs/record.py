"""The layout of a run folder, and the record that reads and writes it.

An ``evaluate`` or ``train`` job leaves::

    run.json       {"kind", "query_embeddings", "gallery_embeddings", "train_embeddings"?,
                    "ranking", "exclude_self", "metric", "threshold", "k", ...}
                   (paths may be relative to the run folder)
    ranking.npz    the exact ranking of the queries (:class:`lookalike.ranking.Ranking`)
    metrics.json   flat {"recall@1": ..., "map@r": ..., "n_queries": ...}
    variants.csv   one row per post-processing variant: "variant" + metric columns
    results.csv    query_id, rank, gallery_id, gallery_path, score (the served ranking)
    history.csv    epoch, step, train/loss, val/map@r, ... (training only)
    config.yaml    the resolved configuration
    skipped.csv    id, path, reason of every image that could not be read (as in an
                   embedding folder)
    curves.png     the training curves (training only)
    checkpoints/   best.ckpt and last.ckpt (training only; a rerun resumes from last.ckpt), and
                   epoch_N.ckpt of every epoch with trainer.keep_every_epoch
    epochs/        epoch_N/{metrics.json, results_epoch_N.json, manifest.json} of every validated
                   epoch (trainer.keep_every_epoch; lookalike.train.epoch_artefacts)
    model/         the best checkpoint exported for embed/evaluate (training only)
    feature_cache/ train/ and val/: the frozen backbone's features of a run that trains on
                   cached features (``trainer.cache_features``), embedding folders kept while it
                   trains so that a killed run resumes without embedding again; removed when
                   training ends
    embeddings/    query/gallery embedding folders made by the run
    test/          (training) the best model evaluated on the test split: a run folder itself
    report.html    the report built from the files above
    manifest.json  kind "run", size and SHA-256 of every file above (nested folders included),
                   the embedder fingerprint; written last, by :meth:`RunRecord.finish`

An ``evaluate`` run folder is built beside its target (``.NAME.partial``, kept after a kill so
that its ``embeddings/`` resume) and swapped in whole. A training run folder is written in place
by Lightning over many epochs (its ``checkpoints/`` must stay where a rerun resumes from); its
manifest is removed when a run starts and written when the run (test evaluation and report
included) is over, so an unfinished or interrupted training folder has none. Readers verify the
manifest (:meth:`RunRecord.verify`) before reading anything.

Every write is atomic. Every other module takes these names from here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lookalike.embed.shards import SKIPPED_FILE as SKIPPED_CSV
from lookalike.embed.shards import read_skipped_csv, write_skipped_csv
from lookalike.embed.store import EmbeddingSet
from lookalike.index.metrics import get_metric
from lookalike.ranking import RANKING_FILE, Ranking
from lookalike.utils.atomic import atomic_write_json
from lookalike.utils.folders import MANIFEST_FILE, Manifest, verify_folder, write_manifest

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
VARIANTS_FILE = "variants.csv"
RESULTS_FILE = "results.csv"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
SKIPPED_FILE = SKIPPED_CSV  # one spelling for run and embedding folders
REPORT_FILE = "report.html"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
EPOCHS_DIR = "epochs"
MODEL_DIR = "model"
FEATURE_CACHE_DIR = "feature_cache"
EMBEDDINGS_DIR = "embeddings"
TEST_DIR = "test"
RUN_KINDS = ("evaluate", "train")
RUN_KIND = "run"  # the manifest's kind; RUN_KINDS are the jobs that write one
EMBEDDING_KEYS = ("query_embeddings", "gallery_embeddings", "train_embeddings")


@dataclass
class RunSettings:
    """The validated contents of ``run.json`` that jobs and reports read back.

    Attributes:
        kind: "evaluate" or "train".
        query_embeddings: Folder of the ranked queries' embeddings.
        gallery_embeddings: Folder of the gallery's embeddings.
        train_embeddings: Folder of a sample of training embeddings (training runs).
        ranking: The ranking file of those queries against that gallery.
        exclude_self: Each query's own gallery row was left out of its ranking.
        metric: The metric that ranked ("cosine", "ip", "l2", "l1").
        threshold: The rejection threshold applied to the served results, if any.
        k: Results per query in ``results.csv``.
    """

    kind: str = "evaluate"
    query_embeddings: str | None = None
    gallery_embeddings: str | None = None
    train_embeddings: str | None = None
    ranking: str | None = None
    exclude_self: bool = False
    metric: str = "cosine"
    threshold: float | None = None
    k: int = 10


def _optional_path(raw: dict[str, Any], key: str, path: Path) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{path}: {key} must be a path or null, got {value!r}")
    return value


def parse_settings(raw: Any, path: Path) -> RunSettings:
    """Validate the object read from ``run.json``; a ValueError names the file and the field."""
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
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"{path}: threshold must be a finite number or null, got {threshold!r}")
    k = raw.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{path}: k must be a positive integer, got {k!r}")
    return RunSettings(
        kind=kind,
        query_embeddings=_optional_path(raw, "query_embeddings", path),
        gallery_embeddings=_optional_path(raw, "gallery_embeddings", path),
        train_embeddings=_optional_path(raw, "train_embeddings", path),
        ranking=_optional_path(raw, "ranking", path),
        exclude_self=bool(raw.get("exclude_self", False)),
        metric=metric,
        threshold=None if threshold is None else float(threshold),
        k=k,
    )


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a ValueError names the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rewrite or remove it") from error


class RunRecord:
    """A run folder: where each file of the layout lives, and typed reads and writes of them.

    Args:
        root: The run folder (created on the first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """``root / name``."""
        return self.root / name

    # the manifest ------------------------------------------------------------------------------
    def finish(self, fingerprint: str | None = None) -> Manifest:
        """Write the manifest of every file of the run: call it last, when the run is complete.

        Args:
            fingerprint: The embedder whose embeddings the run ranked, when known.
        """
        settings = self.read_settings()
        kind = settings.kind if settings is not None else None
        return write_manifest(self.root, RUN_KIND, fingerprint, {"job": kind})

    def unfinish(self) -> None:
        """Remove the manifest before a job changes the folder in place (a training rerun), so
        that a folder it leaves half-changed is never taken for a finished one."""
        self.path(MANIFEST_FILE).unlink(missing_ok=True)

    def verify(self, ignore: tuple[str, ...] = ()) -> Manifest:
        """Check every file against the run's manifest (see
        :func:`~lookalike.utils.folders.verify_folder`); ``ignore`` names files left unchecked.

        Raises:
            FileNotFoundError: The folder does not exist.
            ArtefactError: The run is unfinished (no manifest) or a file differs.
        """
        return verify_folder(self.root, RUN_KIND, ignore=ignore)

    def resolve(self, value: str | None) -> Path | None:
        """A path written in ``run.json``: absolute, else relative to the run folder."""
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` as written in ``run.json``: relative when inside the run folder."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path.resolve())

    # run.json -------------------------------------------------------------------------------
    def read_raw(self) -> dict[str, Any]:
        """``run.json`` as written (every key, known or not); {} when absent."""
        path = self.path(RUN_FILE)
        if not path.is_file():
            return {}
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
        return raw

    def read_settings(self) -> RunSettings | None:
        """The validated ``run.json``, None when absent."""
        path = self.path(RUN_FILE)
        return parse_settings(read_json(path), path) if path.is_file() else None

    def write_settings(self, settings: RunSettings, **extra: Any) -> Path:
        """Write ``run.json``: the settings, then job-specific ``extra`` keys."""
        path = self.path(RUN_FILE)
        atomic_write_json(path, {**asdict(settings), **extra})
        return path

    def update_settings(self, **fields: Any) -> Path:
        """Merge ``fields`` into the existing ``run.json`` (validated before it is written)."""
        path = self.path(RUN_FILE)
        merged = {**self.read_raw(), **fields}
        parse_settings(merged, path)
        atomic_write_json(path, merged)
        return path

    # the other files --------------------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        path = self.path(METRICS_FILE)
        atomic_write_json(path, metrics)
        return path

    def read_metrics(self) -> dict[str, Any] | None:
        path = self.path(METRICS_FILE)
        if not path.is_file():
            return None
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise ValueError(f"{path} must hold a flat JSON object of metrics")
        return metrics

    def write_skipped(self, skipped: list[dict[str, Any]]) -> Path:
        path = self.path(SKIPPED_FILE)
        write_skipped_csv(path, skipped)
        return path

    def read_skipped(self) -> list[dict[str, str]] | None:
        """The images the run could not read, None when the file is absent."""
        path = self.path(SKIPPED_FILE)
        return read_skipped_csv(path) if path.is_file() else None

    def write_ranking(self, ranking: Ranking) -> Path:
        """Save ``ranking`` as ``ranking.npz`` of this run."""
        return ranking.save(self.path(RANKING_FILE))

    def load_ranking(self) -> Ranking | None:
        """The ranking ``run.json`` names (``ranking.npz`` of this run by default), or None."""
        settings = self.read_settings()
        path = self.resolve(settings.ranking if settings else None) or self.path(RANKING_FILE)
        return Ranking.load(path) if path.is_file() else None

    def embeddings_dir(self, name: str) -> Path:
        """``embeddings/NAME``: an embedding folder the run makes."""
        return self.root / EMBEDDINGS_DIR / name

    def load_embeddings(self, key: str) -> EmbeddingSet | None:
        """The :class:`EmbeddingSet` ``run.json`` names under ``key``; None when it names none."""
        if key not in EMBEDDING_KEYS:
            raise ValueError(
                f"unknown embedding key {key!r}; valid names: {', '.join(EMBEDDING_KEYS)}"
            )
        settings = self.read_settings()
        path = self.resolve(getattr(settings, key) if settings else None)
        return None if path is None else EmbeddingSet.load(path)
