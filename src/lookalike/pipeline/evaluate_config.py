"""The typed settings of an ``evaluate`` run, and their validation before anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lookalike.embed.spec import EmbedSpec
from lookalike.index import INDEXES
from lookalike.index.devices import check_index_device
from lookalike.index.metrics import get_metric
from lookalike.index.spec import IndexSpec
from lookalike.metrics import metrics_depth
from lookalike.metrics.metric_choice import AUTO_METRIC, DEFAULT_MONITOR
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import check_embed_spec
from lookalike.pipeline.open_set import RejectionSpec
from lookalike.pipeline.postprocess import PostprocessSpec
from lookalike.search.rejection import check_threshold


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
        index: The index that produces ``results.csv``; ``index.metric=auto`` scores cosine,
            inner product, L2 and L1 on the protocol's val split (the test split when it has
            none, which the run says) and uses the best by ``metric_monitor``
            (``metric_choice.json`` in the run).
        metric_monitor: What ``index.metric=auto`` maximises ("map@r", "recall@1", "map@5" ...).
        postprocess: Whitening / DBA / QE / k-reciprocal steps, each scored beside the baseline
            in ``variants.csv``.
        rejection: A "no match" threshold (fixed, or the one stored with an index folder).
        k: Results per query written to ``results.csv``.
        recall_ks: K values of Recall@K.
        precision_ks: K values of Precision@K (may be empty).
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
    metric_monitor: str = DEFAULT_MONITOR
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    rejection: RejectionSpec = field(default_factory=RejectionSpec)
    k: int = 10
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    precision_ks: list[int] = field(default_factory=lambda: [10])
    map_at_k: int = 5
    topk_weights: dict[int, float] = field(default_factory=lambda: {1: 600.0, 5: 300.0, 10: 100.0})
    output: str = "runs/evaluate"
    report: bool = True


    def weights(self) -> dict[int, float]:
        """``topk_weights`` with int keys and float values."""
        return {int(k): float(w) for k, w in self.topk_weights.items()}

    def ranking_depth(self) -> int:
        """Neighbours the run's ranking keeps: enough for results, metrics and every variant."""
        depth = max(self.k, metrics_depth(self.recall_ks, self.precision_ks, self.map_at_k,
                                          self.weights()))
        if self.postprocess.enabled:
            depth = max(depth, self.postprocess.depth)
        return depth


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_evaluate_config(config: EvaluateConfig) -> None:
    """Refuse a config that cannot run, before anything is embedded or written.

    Raises:
        ValueError: One line naming the setting and the value given.
    """
    inputs = [
        name
        for name, given in (
            ("source", bool(config.source)),
            ("embeddings", bool(config.embeddings)),
            ("query_embeddings/gallery_embeddings",
             bool(config.query_embeddings or config.gallery_embeddings)),
        )
        if given
    ]
    if not inputs:
        raise ValueError(
            "nothing to evaluate: give a source of images, an embedding folder, or two"
        )
    if len(inputs) > 1:
        raise ValueError(
            f"give one input, not {' and '.join(inputs)}: a source of images, one embedding "
            "folder, or query and gallery embedding folders"
        )
    if bool(config.query_embeddings) != bool(config.gallery_embeddings):
        raise ValueError("give both query_embeddings and gallery_embeddings, or a source")
    _positive_int(config.k, "k")
    _positive_int(config.map_at_k, "map_at_k")
    if not config.recall_ks:
        raise ValueError("recall_ks must list at least one positive integer")
    for value in config.recall_ks:
        _positive_int(value, "each of recall_ks")
    for value in config.precision_ks:
        _positive_int(value, "each of precision_ks")
    for key, weight in config.topk_weights.items():
        try:
            _positive_int(int(key), "each key of topk_weights")
        except (TypeError, ValueError):
            raise ValueError(f"topk_weights keys must be positive integers, got {key!r}") from None
        if not math.isfinite(float(weight)):
            raise ValueError(f"topk_weights[{key}] must be a finite number, got {weight!r}")
    if config.rejection.threshold is not None and config.rejection.index:
        raise ValueError(
            f"give a rejection threshold ({config.rejection.threshold}) or an index whose stored "
            f"threshold is used ({config.rejection.index}), not both"
        )
    check_threshold(config.rejection.threshold, "the rejection threshold")
    if config.index.metric.strip().lower() != AUTO_METRIC:
        get_metric(config.index.metric)
    INDEXES.get(config.index.kind)
    check_index_device(config.index.device, config.index.kind)
    check_embed_spec(config.embed)
    if config.postprocess.enabled:
        _check_postprocess(config.postprocess)


def _check_postprocess(spec: PostprocessSpec) -> None:
    """Counts positive, weights finite, shares in [0, 1]: checked before anything is ranked."""
    whitening_dim = 1 if spec.whitening_dim is None else spec.whitening_dim  # None: input width
    counts = (("depth", spec.depth), ("dba_n", spec.dba_n), ("qe_n", spec.qe_n),
              ("k1", spec.k1), ("k2", spec.k2), ("whitening_dim", whitening_dim))
    for name, count in counts:
        _positive_int(count, f"postprocess.{name}")
    for name, weight in (("dba_alpha", spec.dba_alpha), ("qe_alpha", spec.qe_alpha)):
        if not math.isfinite(float(weight)):
            raise ValueError(f"postprocess.{name} must be a finite number, got {weight!r}")
    shares = (("lambda_value", spec.lambda_value),
              ("whitening_shrinkage", spec.whitening_shrinkage))
    for name, share in shares:
        if not 0.0 <= float(share) <= 1.0:  # NaN fails too
            raise ValueError(f"postprocess.{name} must lie in [0, 1], got {share!r}")
