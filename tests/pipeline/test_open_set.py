"""Threshold tuning and open-set metrics, held to naive loops over small rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.pipeline.open_set import RejectionSpec, rejection_metrics, tune_rejection
from lookalike.ranking import rank
from naive_metrics import kaggle_apk


def _data(seed: int = 0) -> tuple[EmbeddingSet, EmbeddingSet]:
    """8 known classes (gallery + queries) and 6 distractor queries from unseen clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(14, 24))
    gallery = np.concatenate([c + 0.5 * rng.normal(size=(3, 24)) for c in centres[:8]])
    known = np.concatenate([c + 0.5 * rng.normal(size=(2, 24)) for c in centres[:8]])
    unknown = centres[8:] + 0.5 * rng.normal(size=(6, 24))
    queries = np.concatenate([known, unknown])
    g_labels = [str(i // 3) for i in range(24)]
    q_labels: list[str | None] = [str(i // 2) for i in range(16)] + [None] * 6
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    g_ids, q_ids = [f"g{i}" for i in range(24)], [f"q{i}" for i in range(22)]
    return (
        EmbeddingSet(normalise(queries), q_ids, q_ids, q_labels),
        EmbeddingSet(normalise(gallery), g_ids, g_ids, g_labels),
    )


def _naive_map5_with_rejection(query: EmbeddingSet, gallery: EmbeddingSet, threshold: float) -> float:
    scores = query.embeddings @ gallery.embeddings.T
    total = 0.0
    for row, label in enumerate(query.labels):
        order = np.argsort(-scores[row])[:5]
        answers: list[str | None] = []
        for column in order:
            if "new" not in answers and scores[row, column] < threshold:
                answers.append("new")
            answers.append(gallery.labels[column])
        answers = answers[:5]
        if "new" not in answers and len(answers) < 5:
            answers.append("new")
        truth = "new" if label is None else label
        relevant_total = 1 if label is None else sum(g == label for g in gallery.labels)
        hits, ap = 0, 0.0
        for position, answer in enumerate(answers[:5], start=1):
            if answer == truth:
                hits += 1
                ap += hits / position
        total += ap / min(relevant_total, 5)
    return total / len(query.labels)


def test_rejection_metrics_match_a_naive_loop() -> None:
    query, gallery = _data()
    ranking = rank(query.embeddings, gallery.embeddings, query.labels, gallery.labels, k=10)
    for threshold in (0.2, 0.5, 0.7):
        metrics = rejection_metrics(ranking, threshold)
        assert metrics["map@5_rejection"] == pytest.approx(_naive_map5_with_rejection(query, gallery, threshold))
    assert metrics["n_distractor_queries"] == 6
    assert 0.0 <= metrics["open_set_auc"] <= 1.0


def test_tuned_threshold_is_the_best_on_a_grid_and_beats_no_rejection(tmp_path: Path) -> None:
    query, gallery = _data(1)
    outcome = tune_rejection(query, gallery, RejectionSpec(objective="map@5"))
    grid = np.linspace(-1, 1, 401)
    best_on_grid = max(_naive_map5_with_rejection(query, gallery, t) for t in grid)
    assert outcome.value == pytest.approx(_naive_map5_with_rejection(query, gallery, outcome.threshold))
    assert outcome.value >= best_on_grid - 1e-9
    assert outcome.value > outcome.baseline
    assert outcome.held_out_classes == []
    saved = json.loads(outcome.save(tmp_path).read_text())
    assert saved["threshold"] == pytest.approx(outcome.threshold)
    assert (tmp_path / "threshold_curve.csv").read_text().startswith("threshold,map@5")
    assert (tmp_path / "threshold.png").read_bytes()[:4] == b"\x89PNG"
    lines = outcome.plot().axes[0].get_lines()
    assert lines[2].get_xdata()[0] == pytest.approx(outcome.threshold)  # the tuned marker


def test_without_distractors_whole_classes_are_held_out() -> None:
    query, gallery = _data(2)
    genuine = query.select(np.arange(16))
    outcome = tune_rejection(genuine, gallery, RejectionSpec(objective="weighted_topk", holdout_fraction=0.25))
    assert len(outcome.held_out_classes) == 2
    with pytest.raises(ValueError, match="genuine and distractor"):
        tune_rejection(genuine, gallery, RejectionSpec(holdout_fraction=0.0))


def test_tune_and_save_writes_the_tuned_threshold_into_the_index(tmp_path: Path) -> None:
    from lookalike.pipeline.indexing import build_index
    from lookalike.pipeline.open_set import tune_and_save_threshold

    query, gallery = _data(1)
    query.save(tmp_path / "q")
    gallery.save(tmp_path / "g")
    build_index(gallery, tmp_path / "index")
    saved = tune_and_save_threshold(tmp_path / "q", tmp_path / "g", RejectionSpec(objective="map@5"),
                                    output=tmp_path / "tuned", index=tmp_path / "index")
    direct = tune_rejection(query, gallery, RejectionSpec(objective="map@5"))
    assert saved.outcome.threshold == pytest.approx(direct.threshold)
    assert saved.path == tmp_path / "tuned" / "threshold.json" and saved.plot.is_file()
    assert json.loads(saved.path.read_text())["threshold"] == pytest.approx(direct.threshold)
    stored = json.loads((tmp_path / "index" / "index.json").read_text())["extra"]["threshold"]
    assert stored == pytest.approx(direct.threshold) and saved.index == tmp_path / "index"


def test_tune_and_save_guesses_self_exclusion_from_ids(tmp_path: Path) -> None:
    from lookalike.pipeline.open_set import tune_and_save_threshold

    _, gallery = _data(3)
    query = gallery.select(np.arange(0, 24, 2))  # every query is a gallery image
    spec = RejectionSpec(objective="map@5", holdout_fraction=0.25)
    saved = tune_and_save_threshold(query, gallery, spec, output=tmp_path / "tuned")
    excluded = tune_rejection(query, gallery, spec, exclude_self=True)
    assert saved.outcome.threshold == pytest.approx(excluded.threshold)
    assert saved.outcome.value == pytest.approx(excluded.value)
    assert saved.index is None


@pytest.mark.parametrize("damage", ["missing", "no_state", "corrupt_json", "other_metric", "other_model"])
def test_a_bad_index_fails_before_anything_is_written(tmp_path: Path, damage: str) -> None:
    from lookalike.pipeline.indexing import build_index
    from lookalike.pipeline.open_set import tune_and_save_threshold

    query, gallery = _data(1)
    gallery.info["fingerprint"] = "abcd"
    folder = tmp_path / "index"
    build_index(gallery, folder, metric="l2" if damage == "other_metric" else "cosine")
    if damage == "missing":
        folder = tmp_path / "no_such_index"
    elif damage == "no_state":
        (folder / "index.faiss").unlink()
    elif damage == "corrupt_json":
        (folder / "index.json").write_text("{not json")
    elif damage == "other_model":
        gallery.info["fingerprint"] = "ef01"
    error = FileNotFoundError if damage == "missing" else ValueError
    with pytest.raises(error, match=str(folder)):
        tune_and_save_threshold(query, gallery, output=tmp_path / "tuned", index=folder)
    assert not (tmp_path / "tuned").exists()


def _naive_all_vs_all_map5(labels: list[str | None], indices: np.ndarray, scores: np.ndarray,
                           threshold: float | None) -> float:
    """Kaggle's MAP@5 of each image against the others (its own image is never an answer):
    "no match" before the first neighbour worse than ``threshold`` (distances)."""
    total = 0.0
    for query, label in enumerate(labels):
        truth = {row for row, other in enumerate(labels)
                 if label is not None and other == label and row != query} or {"new"}  # fmt: skip
        rows = list(indices[query])
        cut = len(rows) if threshold is None else next(
            (i for i, s in enumerate(scores[query]) if not s <= np.float32(threshold)), len(rows))
        total += kaggle_apk(truth, (rows[:cut] + ["new"] + rows[cut:])[:5], 5)
    return total / len(labels)


def test_all_vs_all_rejection_leaves_each_images_own_row_out_of_its_answers() -> None:
    """Each image a query against the others: its own image is no answer, a class of one image
    is a distractor (nothing else shows it), and MAP@5 divides by the class size minus one."""
    from lookalike.search.topk import search_embeddings

    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, 40)
    labels: list[str | None] = [f"c{c}" for c, n in enumerate(sizes) for _ in range(n)]
    labels += [None] * 20
    centres = {label: rng.normal(size=16) for label in set(labels) - {None}}
    vectors = np.array([(centres[label] if label else rng.normal(size=16))
                        + 0.6 * rng.normal(size=16) for label in labels], np.float32)  # fmt: skip
    ids = [f"i{j}" for j in range(len(labels))]
    images = EmbeddingSet(vectors, ids, ids, labels)
    outcome = tune_rejection(images, images, RejectionSpec(objective="map@5"), metric="l2",
                             exclude_self=True)  # fmt: skip
    result = search_embeddings(images, images, k=5, metric="l2", exclude_self=True)
    assert outcome.baseline == pytest.approx(
        _naive_all_vs_all_map5(labels, result.indices, result.scores, None), abs=1e-9)
    assert outcome.value == pytest.approx(
        _naive_all_vs_all_map5(labels, result.indices, result.scores, outcome.threshold), abs=1e-9)

    ranking = rank(vectors, vectors, labels, labels, k=10, metric="l2",
                   exclude_rows=np.arange(len(labels)))  # fmt: skip
    metrics = rejection_metrics(ranking, outcome.threshold)
    assert metrics["map@5_rejection"] == pytest.approx(outcome.value, abs=1e-9)
    singletons = sum(1 for label in labels if label is not None and labels.count(label) == 1)
    assert metrics["n_distractor_queries"] == 20 + singletons
