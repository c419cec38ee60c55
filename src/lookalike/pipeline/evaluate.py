"""``evaluate``: images or embeddings in; one ranking, metrics, results and a report out.

The job a user runs to score a model on a retrieval split::

    source ─ protocol ─► query / gallery images ─ embed ─► EmbeddingSets
        ─ rank (exact, chunked, once) ─► ranking.npz ─┬─► metrics.json (Recall@K, mAP, MAP@R ...)
                                                       ├─► open-set metrics at the threshold
                                                       ├─► variants.csv (baseline of re-ranking)
                                                       ├─► results.csv (when the index is exact)
                                                       ├─► metric_choice.json (index.metric=auto)
                                                       └─► report.html, then manifest.json

The ranking is computed once, by :func:`lookalike.ranking.rank`, and everything downstream reads
it. Metrics are exact, so an approximate index never flatters or penalises a model; when the
configured index is approximate (IVF, HNSW, PQ) ``results.csv`` comes from searching it, as a
deployment would serve it. With ``index.metric=auto`` the four metrics are scored on the
protocol's val split first (:func:`resolve_metric`) and the run ranks with the best one.

The run folder is built beside its target (``.NAME.partial``) and swapped in whole once its
manifest is written, so a failed or killed run never leaves a half-written folder. Embedding
images is the long step: a killed run keeps the partial folder's ``embeddings/`` (and nothing
else of it), and the same command continues from there; a rerun over a finished run reuses the
shards of its embeddings that still match its manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.config import resolve_config, save_config
from lookalike.index import INDEXES, check_index_device, get_metric
from lookalike.index.io import read_index_metadata
from lookalike.index.result import SearchResult
from lookalike.metrics import retrieval_metrics
from lookalike.metrics.metric_choice import MetricChoice
from lookalike.models import Embedder
from lookalike.pipeline.evaluate_config import EvaluateConfig, check_evaluate_config
from lookalike.pipeline.evaluate_inputs import (
    EvaluationInputs,
    chooses_metric,
    embedding_folders,
    load_inputs,
    load_precomputed,
)
from lookalike.pipeline.metric_choice import resolve_metric
from lookalike.pipeline.open_set import RejectionSpec, rejection_metrics
from lookalike.pipeline.postprocess import compare_variants, write_variants_csv
from lookalike.ranking import RANKING_FILE, Ranking, rank
from lookalike.report.html import build_report
from lookalike.runs import (
    CONFIG_FILE,
    EMBEDDINGS_DIR,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_KIND,
    VARIANTS_FILE,
    RunRecord,
    RunSettings,
)
from lookalike.search.rejection import check_threshold
from lookalike.search.topk import search_embeddings, self_exclusion
from lookalike.search.writers import write_results
from lookalike.utils.folders import atomic_folder, check_replaceable, link_verified_files
from lookalike.utils.progress import ProgressFactory, tracker
from lookalike.utils.vectors import check_vectors

logger = logging.getLogger(__name__)

__all__ = ["EvaluateConfig", "EvaluateOutcome", "evaluate", "run_evaluation"]


@dataclass
class EvaluateOutcome:
    """What an ``evaluate`` run produced.

    Attributes:
        metrics: The metrics written to ``metrics.json`` (empty for unlabelled queries).
        output: The run folder.
        results_path: The ranked results file.
        skipped: Images that could not be read, ``[{"id", "path", "reason"}]``.
        variants: ``{variant: metrics}`` of the post-processing variants (empty when none is on).
        ranking: The run's ranking (also saved as ``ranking.npz``).
        inputs: The embeddings ranked, with the split and embedder that made them.
        report_path: ``report.html`` when one was written.
        metric_choice: The metric chosen with ``index.metric=auto`` and every candidate's scores
            (also ``metric_choice.json``); None when the metric was given.
    """

    metrics: dict[str, float]
    output: Path
    results_path: Path
    skipped: list[dict[str, str]]
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    ranking: Ranking | None = None
    inputs: EvaluationInputs | None = None
    report_path: Path | None = None
    metric_choice: MetricChoice | None = None


def resolve_threshold(spec: RejectionSpec) -> float | None:
    """The rejection threshold: the one given, else the one stored with ``spec.index``."""
    if spec.threshold is not None or not spec.index:
        return spec.threshold
    value = read_index_metadata(spec.index).get("extra", {}).get("threshold")
    if value is None:
        raise ValueError(
            f"the index at {spec.index} stores no threshold; run `lookalike tune-threshold` first"
        )
    return check_threshold(value, f"the threshold stored with the index at {spec.index}")


def rank_inputs(
    config: EvaluateConfig, inputs: EvaluationInputs, progress: ProgressFactory | None = None
) -> Ranking:
    """The one ranking of the run: every query against the whole gallery, exact."""
    query, gallery = inputs.query, inputs.gallery
    return rank(
        query.embeddings,
        gallery.embeddings,
        query.labels,
        gallery.labels,
        metric=config.index.metric,
        k=config.ranking_depth(),
        exclude_rows=self_exclusion(query.ids, gallery.ids) if inputs.exclude_self else None,
        device=config.index.device,
        progress=tracker(progress, "ranking", len(query)),
    )


def served_results(
    config: EvaluateConfig,
    inputs: EvaluationInputs,
    ranking: Ranking,
    progress: ProgressFactory | None = None,
) -> SearchResult:
    """The top-``k`` lists a deployment of the configured index would serve.

    An exact index (flat, exact_torch) serves the ranking's own lists; an approximate one is
    built and searched.
    """
    if INDEXES.get(config.index.kind).exact:
        return ranking.neighbours.top(config.k)
    return search_embeddings(
        inputs.query,
        inputs.gallery,
        k=config.k,
        index_kind=config.index.kind,
        metric=config.index.metric,
        exclude_self=inputs.exclude_self,
        device=config.index.device,
        progress=tracker(progress, f"searching {config.index.kind}", len(inputs.query)),
        **config.index.params,
    )


def score(config: EvaluateConfig, ranking: Ranking) -> dict[str, float]:
    """The ranking metrics of the labelled queries, ``{}`` when nothing is labelled.

    Unlabelled gallery images are distractors (never a correct answer); unlabelled queries have
    no ground truth and are left out.
    """
    codes = ranking.codes
    if not codes.labelled_queries.any() or (codes.gallery < 0).all():
        logger.info("queries or gallery are unlabelled: results only, no metrics")
        return {}
    unlabelled = int((~codes.labelled_queries).sum())
    if unlabelled:
        logger.info("%d unlabelled queries left out of the metrics", unlabelled)
    return retrieval_metrics(
        ranking, ks=config.recall_ks, precision_ks=config.precision_ks,
        map_at_k=config.map_at_k, weights=config.weights(),
    ).summary


def compare_postprocessing(
    config: EvaluateConfig, inputs: EvaluationInputs, ranking: Ranking
) -> dict[str, dict[str, float]]:
    """Each enabled re-ranking step beside the baseline (the run's ranking), labelled queries."""
    labelled = np.flatnonzero(ranking.codes.labelled_queries)
    return compare_variants(
        inputs.query.select(labelled),
        inputs.gallery,
        config.postprocess,
        config.index.metric,
        inputs.exclude_self,
        tuple(config.recall_ks),
        config.map_at_k,
        config.weights(),
        baseline=ranking.select(labelled).neighbours,
    )


def check_inputs(config: EvaluateConfig, inputs: EvaluationInputs) -> None:
    """Refuse rows that would rank wrongly: NaN or infinite ones, and zero ones under cosine
    (or under ``auto``, which tries cosine)."""
    cosine = chooses_metric(config) or get_metric(config.index.metric).normalize
    query_name = config.query_embeddings or config.embeddings or f"{config.source} (queries)"
    gallery_name = config.gallery_embeddings or config.embeddings or f"{config.source} (gallery)"
    check_vectors(inputs.query.embeddings, f"{query_name} embeddings", cosine)
    check_vectors(inputs.gallery.embeddings, f"{gallery_name} embeddings", cosine)


def run_evaluation(
    config: EvaluateConfig,
    embedder: Embedder | None = None,
    progress: ProgressFactory | None = None,
) -> EvaluateOutcome:
    """Embed (or load), rank once, score and write a run folder; see the module docstring.

    Args:
        config: The run's settings; validated before anything is written.
        embedder: A model already in memory, used instead of building ``config.model``.
        progress: Receives the progress of embedding, ranking and an approximate search.

    Returns:
        What the run produced; its folder is ``config.output``.
    """
    check_evaluate_config(config)
    device = check_index_device(config.index.device, config.index.kind)
    config = dataclasses.replace(config, index=dataclasses.replace(config.index, device=device))
    threshold = resolve_threshold(config.rejection)
    output = Path(config.output)
    check_replaceable(output, RUN_KIND)
    _check_inputs_outside(config, output)
    precomputed = None if config.source else load_precomputed(config)
    if precomputed is not None:
        check_inputs(config, precomputed)
    with atomic_folder(output, resume=precomputed is None) as build:
        if precomputed is None:
            _keep_only_embeddings(build, output)
        inputs = precomputed or load_inputs(config, embedder, progress, build)
        check_inputs(config, inputs)
        config, choice = resolve_metric(config, inputs)
        record = RunRecord(build)
        if choice is not None:
            choice.save(build)
        ranking, metrics, variants = _write_run(config, inputs, record, threshold, progress)
        _drop_unused_embeddings(record)
        if config.report:
            build_report(build, verify=False)
        record.finish(inputs.query.fingerprint)
    return EvaluateOutcome(
        metrics,
        output,
        output / RESULTS_FILE,
        inputs.skipped(),
        variants,
        ranking,
        inputs,
        output / REPORT_FILE if config.report else None,
        choice,
    )


def _check_inputs_outside(config: EvaluateConfig, output: Path) -> None:
    """Refuse precomputed embeddings inside the run folder: the run replaces that folder whole."""
    for given in (config.embeddings, config.query_embeddings, config.gallery_embeddings):
        if given and Path(given).resolve().is_relative_to(output.resolve()):
            raise ValueError(
                f"the embeddings {given} lie inside the run folder {output}, which the run "
                "replaces; copy them out or choose another output folder"
            )


def _keep_only_embeddings(build: Path, output: Path) -> None:
    """Clear what a killed run left in ``build`` but its embeddings (the work worth resuming);
    a fresh build starts from the finished run's embeddings that match its manifest."""
    for path in build.iterdir():
        if path.name == EMBEDDINGS_DIR:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if not (build / EMBEDDINGS_DIR).exists():
        link_verified_files(output, build, under=EMBEDDINGS_DIR)


def _drop_unused_embeddings(record: RunRecord) -> None:
    """Remove embedding folders a previous version of the run made that this one does not name
    (another protocol's sides), so the finished folder holds what ``run.json`` describes."""
    settings = record.read_settings()
    folder = record.root / EMBEDDINGS_DIR
    if settings is None or not folder.is_dir():
        return
    used = {record.resolve(settings.query_embeddings), record.resolve(settings.gallery_embeddings)}
    for child in folder.iterdir():
        if child not in used and child.is_dir() and not child.name.startswith("."):
            shutil.rmtree(child)


def _write_run(
    config: EvaluateConfig,
    inputs: EvaluationInputs,
    record: RunRecord,
    threshold: float | None,
    progress: ProgressFactory | None,
) -> tuple[Ranking, dict[str, float], dict[str, dict[str, float]]]:
    """Rank, serve, score and compare variants, writing every file of the run but the report
    and the manifest into ``record``; returns the ranking, the metrics and the variants."""
    save_config(config, record.path(CONFIG_FILE))
    ranking = rank_inputs(config, inputs, progress)
    record.write_ranking(ranking)
    served = served_results(config, inputs, ranking, progress)
    query, gallery = inputs.query, inputs.gallery
    write_results(
        served, query.ids, gallery.ids, gallery.paths, record.path(RESULTS_FILE),
        threshold=threshold,
    )
    metrics = score(config, ranking)
    if threshold is not None and metrics:
        metrics.update(
            rejection_metrics(ranking, threshold, config.k, config.map_at_k, config.weights())
        )
    if metrics:
        record.write_metrics(metrics)
    variants: dict[str, dict[str, float]] = {}
    if config.postprocess.enabled and metrics:
        variants = compare_postprocessing(config, inputs, ranking)
        write_variants_csv(variants, record.path(VARIANTS_FILE))
    skipped = inputs.skipped()
    if skipped:
        record.write_skipped(skipped)
    query_folder, gallery_folder = embedding_folders(config, inputs, record.root)
    record.write_settings(
        RunSettings(
            kind="evaluate",
            query_embeddings=query_folder,
            gallery_embeddings=gallery_folder,
            ranking=RANKING_FILE,
            exclude_self=inputs.exclude_self,
            metric=config.index.metric,
            threshold=threshold,
            k=config.k,
        )
    )
    return ranking, metrics, variants


def evaluate(
    config: EvaluateConfig | str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    embedder: Embedder | None = None,
    progress: ProgressFactory | None = None,
) -> EvaluateOutcome:
    """``lookalike evaluate`` from Python: settings, then the run (:func:`run_evaluation`).

    Args:
        config: An :class:`EvaluateConfig`, a YAML file of its fields, or None for the defaults.
        overrides: Dotted ``key=value`` settings applied on top (``"index.kind=hnsw"``).
        embedder: A model already in memory, used instead of building ``config.model``.
        progress: Receives the progress of embedding, ranking and an approximate search.

    Returns:
        What the run produced, with its :class:`~lookalike.ranking.Ranking`.
    """
    if isinstance(config, EvaluateConfig):
        resolved = resolve_config(EvaluateConfig, overrides=overrides, base=config)
    else:
        resolved = resolve_config(EvaluateConfig, config, overrides)
    return run_evaluation(resolved, embedder, progress)
