"""``predict`` as a library call: per query, the top-k classes of a trained model, "no match" below
a probability threshold, and the Kaggle CSV.

::

    model/ (embedder + classifier/) ─┬─ head probabilities ─────────────┐
    query embeddings (or images) ────┤                                   ├─ fusion ─ top-k classes
    gallery embeddings (optional) ───┴─ kNN ─ similarity-weighted votes ─┘     ─ "no match" ─ CSV

Class answers are :class:`~lookalike.search.class_answers.ClassAnswers`: a ranking over classes,
so the rejection rule, the threshold tuning (:func:`tune_class_threshold`, the same objective and
candidates as :func:`~lookalike.pipeline.open_set.tune_rejection`) and the Kaggle writer are the
ones retrieval answers use.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lookalike.data.records import ImageSet
from lookalike.embed.store import EmbeddingSet, is_embedding_folder
from lookalike.models.classifier import load_model_classifier, model_classifier_folder
from lookalike.models.spec import ModelSpec
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.open_set import (
    THRESHOLD_PLOT_FILE,
    RejectionSpec,
    SavedThreshold,
    ThresholdOutcome,
    objective_value,
)
from lookalike.report.submission import NO_MATCH_TOKEN, write_class_answers
from lookalike.search.class_answers import (
    ClassAnswers,
    fuse_class_scores,
    knn_class_votes,
    top_classes,
)
from lookalike.search.open_set_scores import create_objective
from lookalike.search.thresholds import (
    nearest_positive_scores,
    percentile_threshold,
    tune_threshold,
)
from lookalike.search.topk import search_embeddings
from lookalike.utils.progress import ProgressFactory, tracker

logger = logging.getLogger(__name__)

ANSWER_SOURCES = ("head", "knn", "fusion")


@dataclass
class PredictSpec:
    """Where class scores come from and how many answers each query gets.

    Attributes:
        by: "head" (the model's classifier), "knn" (votes of the gallery's nearest images) or
            "fusion" (both, mixed by ``vote_weight``).
        k: Classes per query.
        threshold: Probability below which "no match" is inserted; None: never.
        vote_weight: Share ``w`` of the kNN votes in the fusion ``(1 - w) p + w v``.
        neighbours: Gallery neighbours that vote.
        temperature: ``T`` of the vote weights ``exp(s / T)``.
        metric: Similarity of the kNN search.
    """

    by: str = "head"
    k: int = 5
    threshold: float | None = None
    vote_weight: float = 0.5
    neighbours: int = 20
    temperature: float = 0.05
    metric: str = "cosine"


@dataclass
class PredictOutcome:
    """Class answers of the queries, and where they were written.

    Attributes:
        answers: The top-k classes of each query and their scores.
        query_ids: The queries' ids, row by row.
        path: The Kaggle CSV, None when none was written.
        threshold: The probability threshold applied, None when none was.
    """

    answers: ClassAnswers
    query_ids: list[str]
    path: Path | None
    threshold: float | None


def _embeddings(
    source: EmbeddingSet | str | Path | ImageSet, model: str | Path, progress: ProgressFactory | None
) -> EmbeddingSet:
    """An embedding set as given, an embedding folder, or images embedded by ``model``."""
    if isinstance(source, EmbeddingSet):
        return source
    if not isinstance(source, ImageSet) and is_embedding_folder(source):
        return EmbeddingSet.load(source)
    return embed_images(source, None, model=ModelSpec(checkpoint=str(model)), progress=progress)


def class_scores(
    model: str | Path,
    queries: EmbeddingSet,
    spec: PredictSpec,
    gallery: EmbeddingSet | None = None,
    progress: ProgressFactory | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``(Q, C)`` class scores of the queries and the ``C`` class names, as ``spec.by`` says.

    Args:
        model: A saved model folder with its classifier (``lookalike train`` exports one when the
            loss has class weights); for ``by="knn"`` its classes are used when it has them.
        queries: Query embeddings of that model.
        spec: The source of the scores and its settings.
        gallery: Labelled gallery embeddings of the same model, for "knn" and "fusion".
        progress: Asked for "searching" when the gallery is searched.

    Raises:
        ValueError: An unknown ``spec.by``, no gallery for kNN votes, or embeddings of another
            model.
        FileNotFoundError: The model has no classifier (for "head" and "fusion").
    """
    if spec.by not in ANSWER_SOURCES:
        raise ValueError(f"unknown answer source {spec.by!r}; valid: {', '.join(ANSWER_SOURCES)}")
    probabilities, classes = None, None
    if spec.by != "knn" or model_classifier_folder(model).is_dir():
        classifier = load_model_classifier(model, queries.fingerprint)
        classes = classifier.classes or [str(code) for code in range(classifier.num_classes)]
        if spec.by != "knn":
            with torch.no_grad():
                rows = torch.from_numpy(np.ascontiguousarray(queries.embeddings, dtype=np.float32))
                probabilities = classifier.probabilities(rows).numpy()
    if spec.by == "head":
        assert probabilities is not None and classes is not None
        return probabilities, classes
    if gallery is None:
        raise ValueError(f"answers by {spec.by!r} need gallery embeddings with labels")
    if classes is None:
        classes = list(dict.fromkeys(str(label) for label in gallery.labels if label is not None))
    neighbours = search_embeddings(
        queries, gallery, k=spec.neighbours, metric=spec.metric,
        progress=tracker(progress, "searching", len(queries)),
    )
    votes = knn_class_votes(neighbours, gallery.labels, classes, spec.temperature)
    if probabilities is None:
        return votes, classes
    return fuse_class_scores(probabilities, votes, spec.vote_weight), classes


def predict(
    model: str | Path,
    queries: EmbeddingSet | str | Path | ImageSet,
    output: str | Path | None = None,
    spec: PredictSpec | None = None,
    gallery: EmbeddingSet | str | Path | None = None,
    no_match_token: str = NO_MATCH_TOKEN,
    progress: ProgressFactory | None = None,
) -> PredictOutcome:
    """The top-k classes of each query, with "no match" below ``spec.threshold``.

    Args:
        model: Saved model folder (embedder and classifier).
        queries: Query embeddings of that model, their folder, or images (a source spec or an
            :class:`ImageSet`), which are embedded with ``model`` first.
        output: Kaggle CSV to write (``Id,Predicted``, space-separated classes); None: none.
        spec: Answer source, k, threshold; None: ``PredictSpec()``.
        gallery: Labelled gallery embeddings (or their folder) for "knn" and "fusion".
        no_match_token: What "no match" is written as.
        progress: Asked for "embedding" and "searching" steps.

    Returns:
        The answers (their ``result`` holds the class scores before "no match" is inserted).
    """
    spec = spec or PredictSpec()
    query_set = _embeddings(queries, model, progress)
    gallery_set = None if gallery is None else _embeddings(gallery, model, progress)
    scores, classes = class_scores(model, query_set, spec, gallery_set, progress)
    answers = top_classes(scores, classes, spec.k)
    path = None
    if output is not None:
        path = write_class_answers(
            output, answers, query_set.ids, k=spec.k, rejection_threshold=spec.threshold,
            no_match_token=no_match_token,
        )
    return PredictOutcome(answers, list(query_set.ids), path, spec.threshold)


def tune_answer_threshold(
    answers: ClassAnswers,
    query_labels: Sequence[Hashable | None],
    objective: str = "map@5",
    percentile: float = 90.0,
) -> ThresholdOutcome:
    """The probability threshold that maximises ``objective`` over class answers.

    A query is genuine when its label is one of the answers' classes; unlabelled queries and
    queries of other classes are distractors, whose one right answer is "no match".

    Raises:
        ValueError: The queries are all genuine or all distractors.
    """
    labels = [None if label is None else str(label) for label in query_labels]
    genuine = [label in set(answers.classes) for label in labels]
    if all(genuine) or not any(genuine):
        raise ValueError(
            "tuning a probability threshold needs both queries of the classifier's classes and "
            "distractor queries (unlabelled, or of other classes)"
        )
    classes = list(answers.classes)
    result = answers.result
    threshold, curve = tune_threshold(result, labels, classes, objective)
    rule = percentile_threshold(nearest_positive_scores(result, labels, classes), percentile)
    return ThresholdOutcome(
        threshold=threshold,
        objective=objective,
        value=objective_value(result, labels, classes, objective, threshold),
        baseline=objective_value(result, labels, classes, objective, None),
        percentile_threshold=rule,
        percentile_value=objective_value(result, labels, classes, objective, rule),
        held_out_classes=[],
        curve=curve,
        metric="probability",
    )


def tune_class_threshold(
    model: str | Path,
    queries: EmbeddingSet | str | Path,
    spec: PredictSpec | None = None,
    rejection: RejectionSpec | None = None,
    output: str | Path = "threshold",
    gallery: EmbeddingSet | str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> SavedThreshold:
    """Tune the "no match" probability threshold of class answers on validation queries, and
    save it as :func:`~lookalike.pipeline.open_set.tune_and_save_threshold` saves a similarity
    threshold (``threshold.json``, ``threshold_curve.csv``, ``threshold.png``).

    Args:
        model: Saved model folder with its classifier.
        queries: Validation query embeddings of that model (or their folder), labelled; unlabelled
            ones and those of classes the classifier does not know are distractors.
        spec: Answer source (head, knn, fusion) and its settings; ``k`` at least the objective's
            depth.
        rejection: Objective and percentile (``holdout_fraction`` is not used: a classifier
            cannot forget classes); None: ``RejectionSpec()``.
        output: Folder for the threshold files.
        gallery: Labelled gallery embeddings for "knn" and "fusion".
        progress: Asked for "searching" when the gallery is searched.
    """
    spec = spec or PredictSpec()
    rejection = rejection or RejectionSpec()
    query_set = _embeddings(queries, model, progress)
    gallery_set = None if gallery is None else _embeddings(gallery, model, progress)
    scores, classes = class_scores(model, query_set, spec, gallery_set, progress)
    depth = create_objective(rejection.objective).depth
    answers = top_classes(scores, classes, max(spec.k, depth))
    outcome = tune_answer_threshold(
        answers, query_set.labels, rejection.objective, rejection.percentile
    )
    path = outcome.save(output)
    return SavedThreshold(outcome, path, path.parent / THRESHOLD_PLOT_FILE)
