"""``metric=auto`` for ``index`` and ``evaluate``: choose the similarity on validation embeddings.

:func:`choose_metric_on` scores cosine, inner product, L2 and L1 on a labelled validation split
(:func:`lookalike.metrics.metric_choice.choose_metric`): a query set against a gallery, or one
labelled set all-vs-all (each image against the others). :func:`resolve_metric` does it for an
``evaluate`` run (on the protocol's val split), :func:`stored_metric_choice` reads the choice an
index keeps in ``index.json`` (``extra.metric_choice``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.embed.store import EmbeddingSet
from lookalike.index.base import INDEXES
from lookalike.index.io import read_index_metadata
from lookalike.index.metrics import get_metric
from lookalike.metrics.metric_choice import (
    CANDIDATE_METRICS,
    ChoiceOptions,
    MetricChoice,
    choose_metric,
)
from lookalike.pipeline.evaluate_config import EvaluateConfig
from lookalike.pipeline.evaluate_inputs import EvaluationInputs, chooses_metric
from lookalike.search.topk import self_exclusion
from lookalike.utils.vectors import check_vectors

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

METRIC_CHOICE_KEY = "metric_choice"
"""Where an index folder keeps its choice: ``index.json`` ``extra.metric_choice``."""


def load_embeddings(embeddings: EmbeddingSet | str | Path) -> EmbeddingSet:
    """An :class:`EmbeddingSet`, loaded (and verified) when given as a folder."""
    return embeddings if isinstance(embeddings, EmbeddingSet) else EmbeddingSet.load(embeddings)


def choose_metric_on(
    query: EmbeddingSet | str | Path,
    gallery: EmbeddingSet | str | Path | None = None,
    *,
    exclude_self: bool | None = None,
    fingerprint: str | None = None,
    **options: Unpack[ChoiceOptions],
) -> MetricChoice:
    """The best candidate metric on labelled validation embeddings.

    Args:
        query: Validation query embeddings (or their folder); with no ``gallery`` the set is
            ranked all-vs-all, each image against the others.
        gallery: Validation gallery embeddings (or their folder).
        exclude_self: Drop each query's own id from its ranking; None: when every query id is
            a gallery id.
        fingerprint: The model the choice is for (the gallery's); validation embeddings of
            another model are refused.
        **options: ``monitor``, ``candidates``, ``recall_ks``, ``map_at_k``, ``weights``,
            ``split``, ``device``, ``note``, as
            :func:`lookalike.metrics.metric_choice.choose_metric` takes them.

    Raises:
        ValueError: Validation embeddings of another model, NaN/infinite/zero rows, or no
            labelled query with a positive (the message names the folder).
    """
    names = [_name(query, "validation queries"), _name(gallery, "validation gallery")]
    query = load_embeddings(query)
    gallery = query if gallery is None else load_embeddings(gallery)
    candidates = options.get("candidates", CANDIDATE_METRICS)
    for side, name in zip((query, gallery), names):
        check_vectors(side.embeddings, name, any(get_metric(c).normalize for c in candidates))
        if fingerprint and side.fingerprint and side.fingerprint != fingerprint:
            raise ValueError(
                f"{name} come from model {side.fingerprint} but the gallery from {fingerprint}; "
                "choose the metric on validation embeddings of the same model"
            )
    if exclude_self is None:
        exclude_self = set(query.ids) <= set(gallery.ids)
    return choose_metric(
        query.embeddings,
        gallery.embeddings,
        query.labels,
        gallery.labels,
        exclude_rows=self_exclusion(query.ids, gallery.ids) if exclude_self else None,
        **options,
    )


def stored_metric_choice(index_folder: str | Path) -> MetricChoice | None:
    """The choice an index was built with (``metric=auto``), None when its metric was given."""
    stored = read_index_metadata(index_folder).get("extra", {}).get(METRIC_CHOICE_KEY)
    if stored is None:
        return None
    try:
        return MetricChoice.from_dict(stored)
    except ValueError as exc:
        raise ValueError(f"{Path(index_folder) / 'index.json'} extra.{METRIC_CHOICE_KEY}: {exc}") from None


def _name(embeddings: EmbeddingSet | str | Path | None, side: str) -> str:
    if embeddings is None or isinstance(embeddings, EmbeddingSet):
        return f"the {side}"
    return f"{Path(embeddings) / 'embeddings.npy'}"


def resolve_metric(
    config: EvaluateConfig, inputs: EvaluationInputs
) -> tuple[EvaluateConfig, MetricChoice | None]:
    """``config`` with ``index.metric=auto`` replaced by the best metric, and the choice.

    The choice is made on the protocol's val split (all-vs-all); a protocol without one
    chooses on the test split itself, which the choice's ``split`` and ``note`` say (its test
    scores are then optimistic). A config naming its metric is returned unchanged, with None.
    """
    if not chooses_metric(config):
        return config, None
    supported = getattr(INDEXES.get(config.index.kind), "supported_metrics", CANDIDATE_METRICS)
    options: ChoiceOptions = {
        "candidates": [name for name in CANDIDATE_METRICS if name in supported],
        "monitor": config.metric_monitor,
        "recall_ks": tuple(config.recall_ks),
        "map_at_k": config.map_at_k,
        "weights": config.weights(),
        "device": config.index.device,
    }
    if inputs.val is not None:
        choice = choose_metric_on(inputs.val, None, exclude_self=True, split="val", **options)
    else:
        note = (
            "the protocol has no val split: the metric was chosen on the test split itself, so "
            "the test scores under it are optimistic"
        )
        logger.warning("index.metric=auto: %s", note)
        choice = choose_metric_on(
            inputs.query, inputs.gallery, exclude_self=inputs.exclude_self, split="test",
            note=note, **options,
        )
    logger.info("index.metric=auto chose %s on %s", choice.metric, choice.split)
    index = dataclasses.replace(config.index, metric=choice.metric)
    return dataclasses.replace(config, index=index), choice
