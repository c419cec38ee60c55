"""``evaluate``: images or embeddings in; ranked results, metrics and the resolved config out.

The job a user runs to score a model on a retrieval split::

    source ─ protocol ─► query / gallery images ─ embed ─► EmbeddingSets
                                                    └─ index (gallery) ─ search (queries) ─► results.csv
                                                    └─ exact, chunked ranking metrics ─────► metrics.json

Metrics are computed by the exact, memory-bounded ranking of :mod:`lookalike.metrics` (so an
approximate index never flatters or penalises a model), while ``results.csv`` comes from the
configured index, as a deployment would serve it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from lookalike.config import save_config
from lookalike.data.protocols import make_split
from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.extract import embed_image_set
from lookalike.embed.store import EmbeddingSet
from lookalike.index.io import read_index_metadata
from lookalike.metrics import evaluate_retrieval
from lookalike.models import Embedder
from lookalike.pipeline.open_set import (
    RejectionSpec,
    gallery_labels_with_distractors,
    rejection_metrics,
)
from lookalike.pipeline.postprocess import PostprocessSpec, compare_variants, write_variants_csv
from lookalike.pipeline.specs import EmbedSpec, IndexSpec, ModelSpec, build_embedder
from lookalike.report.html import build_report
from lookalike.search.topk import search_embeddings, self_exclusion
from lookalike.search.writers import write_results
from lookalike.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
RESULTS_FILE = "results.csv"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
VARIANTS_FILE = "variants.csv"


@dataclass
class EvaluateConfig:
    """Settings of an ``evaluate`` run (typed defaults of its YAML config).

    Either ``source`` (images, split by ``protocol`` and embedded with ``model``), ``embeddings``
    (one folder written by ``lookalike embed``, split by ``protocol``), or both
    ``query_embeddings`` and ``gallery_embeddings``.

    Attributes:
        source: Image source spec ("folder:PATH", "csv:FILE", "sop:ROOT", a path, or a mapping
            ``{"type": "folder", "root": PATH, "distractor_classes": [...]}``).
        protocol: Split protocol ("given", "all_vs_all", "per_class", "class_disjoint").
        protocol_args: Extra protocol arguments (``query_fraction``, ``seed`` ...).
        embeddings: One folder of precomputed embeddings, split by ``protocol`` like a source.
        query_embeddings: Folder of precomputed query embeddings.
        gallery_embeddings: Folder of precomputed gallery embeddings.
        model: The embedder.
        embed: How images are embedded.
        index: The index that produces ``results.csv``.
        postprocess: Whitening / DBA / QE / k-reciprocal steps, each scored beside the baseline
            in ``variants.csv``.
        rejection: A "no match" threshold (fixed, or the one stored with an index folder).
        k: Results per query written to ``results.csv``.
        recall_ks: K values of Recall@K.
        map_at_k: K of MAP@K (Kaggle's MAP@5).
        topk_weights: Weights of the competition's weighted top-k score, ``{K: weight}``.
        output: Folder for everything the run writes.
        report: Write ``report.html`` (plots, grids, embedding map) into the run folder.
    """

    source: Any = None
    protocol: str = "given"
    protocol_args: dict[str, Any] = field(default_factory=dict)
    embeddings: str | None = None
    query_embeddings: str | None = None
    gallery_embeddings: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    embed: EmbedSpec = field(default_factory=EmbedSpec)
    index: IndexSpec = field(default_factory=IndexSpec)
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    rejection: RejectionSpec = field(default_factory=RejectionSpec)
    k: int = 10
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    map_at_k: int = 5
    topk_weights: dict[int, float] = field(default_factory=lambda: {1: 600.0, 5: 300.0, 10: 100.0})
    output: str = "runs/evaluate"
    report: bool = True


@dataclass
class EvaluateOutcome:
    """What an ``evaluate`` run produced.

    Attributes:
        metrics: The metrics written to ``metrics.json`` (empty for unlabelled queries).
        variants: ``{variant: metrics}`` of the post-processing variants (empty when none is on).
        output: The run folder.
        results_path: The ranked results file.
        skipped: Images that could not be read, ``[{"id", "path", "reason"}]``.
    """

    metrics: dict[str, float]
    output: Path
    results_path: Path
    skipped: list[dict[str, str]]
    variants: dict[str, dict[str, float]] = field(default_factory=dict)


def embed_query_gallery(
    config: EvaluateConfig, embedder: Embedder | None = None
) -> tuple[EmbeddingSet, EmbeddingSet, bool]:
    """The query and gallery embeddings of ``config``, and whether queries are in the gallery.

    With precomputed folders they are loaded (queries whose ids are all in the gallery are
    excluded from their own ranking); otherwise the source is split by the protocol and
    embedded (once, when the protocol queries every image against all others) into
    ``output/embeddings/`` so an interrupted run resumes where it stopped.
    """
    if config.query_embeddings or config.gallery_embeddings:
        if not (config.query_embeddings and config.gallery_embeddings):
            raise ValueError("give both query_embeddings and gallery_embeddings, or a source")
        query = EmbeddingSet.load(config.query_embeddings)
        gallery = EmbeddingSet.load(config.gallery_embeddings)
        if query.fingerprint and gallery.fingerprint and query.fingerprint != gallery.fingerprint:
            raise ValueError(
                f"{config.query_embeddings} and {config.gallery_embeddings} were embedded by "
                f"different models ({query.fingerprint} vs {gallery.fingerprint}); embed both with one"
            )
        # The same images on both sides (e.g. one folder given twice): each is not its own match.
        return query, gallery, set(query.ids) <= set(gallery.ids)
    if config.embeddings:
        return split_embeddings(EmbeddingSet.load(config.embeddings), config)
    if not config.source:
        raise ValueError(
            "nothing to evaluate: give a source of images, an embedding folder, or two"
        )
    split = make_split(load_source(config.source), config.protocol, **config.protocol_args)
    embedder = embedder or build_embedder(config.model)
    folder = Path(config.output) / "embeddings"
    spec = config.embed

    def embed(images: Any, name: str) -> EmbeddingSet:
        logger.info("embedding %d %s images", len(images), name)
        return embed_image_set(
            embedder,
            images,
            output_dir=folder / name,
            batch_size=spec.batch_size,
            num_workers=spec.num_workers,
            device=spec.device,
            tta=tuple(spec.tta),
            shard_size=spec.shard_size,
        )

    if split.exclude_self:
        gallery = embed(split.gallery, "all")
        return rows_of(gallery, split.query), gallery, True
    return embed(split.query, "query"), embed(split.gallery, "gallery"), False


def split_embeddings(
    embeddings: EmbeddingSet, config: EvaluateConfig
) -> tuple[EmbeddingSet, EmbeddingSet, bool]:
    """Split one precomputed embedding folder by the protocol, as a source of images would be."""
    split = make_split(embeddings.to_image_set(), config.protocol, **config.protocol_args)
    return rows_of(embeddings, split.query), rows_of(embeddings, split.gallery), split.exclude_self


def rows_of(embeddings: EmbeddingSet, images: ImageSet) -> EmbeddingSet:
    """The rows of ``embeddings`` holding ``images``, in their order (unreadable ones absent)."""
    rows = self_exclusion(images.ids, embeddings.ids)
    return embeddings.select(rows[rows >= 0])


def run_evaluation(config: EvaluateConfig, embedder: Embedder | None = None) -> EvaluateOutcome:
    """Embed (or load), search, score and write a run folder; see the module docstring."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, output / CONFIG_FILE)
    query, gallery, queries_in_gallery = embed_query_gallery(config, embedder)
    skipped = _merge_skipped(query, gallery)
    query_folder, gallery_folder = _embedding_folders(config, query, gallery, queries_in_gallery)

    with Progress(transient=True) as bar:
        task = bar.add_task("searching", total=len(query))
        result = search_embeddings(
            query,
            gallery,
            k=config.k,
            index_kind=config.index.kind,
            metric=config.index.metric,
            exclude_self=queries_in_gallery,
            device=config.index.device,
            progress=lambda n: bar.advance(task, n),
            **config.index.params,
        )
    threshold = resolve_threshold(config.rejection)
    results_path = write_results(
        result, query.ids, gallery.ids, gallery.paths, output / RESULTS_FILE, threshold=threshold
    )
    metrics = score(config, query, gallery, queries_in_gallery)
    if threshold is not None and metrics:
        metrics.update(
            rejection_metrics(result, query, gallery, threshold, config.map_at_k, _weights(config))
        )
    if metrics:
        atomic_write_json(output / METRICS_FILE, metrics)
    variants = {}
    if config.postprocess.enabled and metrics:
        labelled = query.select(np.flatnonzero([label is not None for label in query.labels]))
        variants = compare_variants(
            labelled,
            gallery,
            config.postprocess,
            config.index.metric,
            queries_in_gallery,
            tuple(config.recall_ks),
            config.map_at_k,
            _weights(config),
        )
        write_variants_csv(variants, output / VARIANTS_FILE)
    if skipped:
        atomic_write_json(output / "skipped.json", skipped)
    atomic_write_json(
        output / RUN_FILE,
        {
            "kind": "evaluate",
            "query_embeddings": query_folder,
            "gallery_embeddings": gallery_folder,
            "exclude_self": queries_in_gallery,
            "metric": config.index.metric,
            "threshold": threshold,
            "k": config.k,
        },
    )
    if config.report:
        build_report(output)
    return EvaluateOutcome(metrics, output, results_path, skipped, variants)


def score(
    config: EvaluateConfig, query: EmbeddingSet, gallery: EmbeddingSet, queries_in_gallery: bool
) -> dict[str, float]:
    """The ranking metrics of the labelled queries against the whole gallery.

    Unlabelled gallery images are distractors (never a correct answer); unlabelled queries have
    no ground truth and are left out. Returns ``{}`` when no query is labelled.
    """
    labelled = np.array([label is not None for label in query.labels], dtype=bool)
    if not labelled.any() or all(label is None for label in gallery.labels):
        logger.info("queries or gallery are unlabelled: results only, no metrics")
        return {}
    if not labelled.all():
        logger.info("%d unlabelled queries left out of the metrics", int((~labelled).sum()))
        query = query.select(np.flatnonzero(labelled))
    gallery_labels = gallery_labels_with_distractors(gallery)
    return evaluate_retrieval(
        query.embeddings,
        query.labels,
        gallery.embeddings,
        gallery_labels,
        metric=config.index.metric,
        ks=tuple(config.recall_ks),
        map_at_k=config.map_at_k,
        weights=_weights(config),
        self_index=self_exclusion(query.ids, gallery.ids) if queries_in_gallery else None,
        progress=True,
    )


def _embedding_folders(
    config: EvaluateConfig, query: EmbeddingSet, gallery: EmbeddingSet, queries_in_gallery: bool
) -> tuple[str, str]:
    """Folders of the query and gallery embeddings (relative to the run folder when inside it)."""
    if config.query_embeddings and config.gallery_embeddings:
        return str(Path(config.query_embeddings).resolve()), str(
            Path(config.gallery_embeddings).resolve()
        )
    folder = Path(config.output) / "embeddings"
    gallery_name = "all" if queries_in_gallery else "gallery"
    if config.embeddings:  # split from one folder: keep the two sides beside the run
        gallery.save(folder / gallery_name)
    if queries_in_gallery and len(query) == len(gallery):
        return "embeddings/all", "embeddings/all"
    if config.embeddings or queries_in_gallery:
        query.save(folder / "query")
    return "embeddings/query", f"embeddings/{gallery_name}"


def resolve_threshold(spec: RejectionSpec) -> float | None:
    """The rejection threshold: the one given, else the one stored with ``spec.index``."""
    if spec.threshold is not None or not spec.index:
        return spec.threshold
    value = read_index_metadata(spec.index).get("extra", {}).get("threshold")
    if value is None:
        raise ValueError(
            f"the index at {spec.index} stores no threshold; run `lookalike tune-threshold` first"
        )
    return float(value)


def _weights(config: EvaluateConfig) -> dict[int, float]:
    return {int(k): float(w) for k, w in config.topk_weights.items()}


def _merge_skipped(*sets: EmbeddingSet) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for embedding_set in sets:
        for entry in embedding_set.info.get("skipped", []):
            seen.setdefault(str(entry.get("path")), entry)
    return list(seen.values())
