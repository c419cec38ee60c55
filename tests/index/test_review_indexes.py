"""Review of the exact and FAISS index kinds against a naive float64 loop over all pairs.

Every kind and metric is held to :func:`naive_reference.naive_scores`: the score sense and value
(l2 is the Euclidean distance, not its square; cosine is over normalised rows, ip over raw
rows), padding, search-time parameters before and after a save/load, training order, stored
rows, empty copies, ties, zero rows and non-finite input.

Ties: every kind returns all rows tied at the top with equal scores, but which of several
identical rows comes first is not specified (it differs between FAISS kinds, and for
``exact_torch`` with the gallery chunk size); only the set and the scores are compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from naive_reference import METRIC_NAMES, naive_scores

from lookalike.index import create_index, load_index, save_index
from lookalike.index.base import Index
from lookalike.index.metrics import get_metric
from lookalike.utils.folders import ArtefactError, read_manifest, write_manifest

DIM = 16

# (kind, parameters generous enough to find the true top 10, exact scores of returned rows)
KINDS: list[tuple[str, dict[str, Any], bool]] = [
    ("exact_torch", {"chunk_size": 7, "gallery_chunk_size": 64}, True),
    ("flat", {}, True),
    ("hnsw", {"M": 16, "ef_construction": 80, "ef_search": 400}, True),
    ("ivf_flat", {"nlist": 8, "nprobe": 8}, True),
    ("ivf_pq", {"nlist": 8, "nprobe": 8, "m": 8, "nbits": 6}, False),
    (
        "ivf_pq",
        {"nlist": 8, "nprobe": 8, "m": 8, "nbits": 6, "refine": "flat", "k_factor": 16},
        True,
    ),
    (
        "ivf_pq",
        {"nlist": 8, "nprobe": 8, "m": 8, "nbits": 6, "refine": "sq8", "k_factor": 16},
        False,
    ),
]
CASES = [
    pytest.param(kind, params, exact_scores, metric, id=f"{kind}-{params.get('refine')}-{metric}")
    for kind, params, exact_scores in KINDS
    for metric in METRIC_NAMES
    if not (kind == "ivf_pq" and metric == "l1")
]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """600 gallery rows around 10 centres (not centred at 0, so ip differs from cosine), 25
    queries near them."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(10, DIM)) * 3 + 1.0
    gallery = centres[rng.integers(0, 10, 600)] + rng.normal(size=(600, DIM))
    queries = centres[rng.integers(0, 10, 25)] + rng.normal(size=(25, DIM))
    return queries.astype(np.float32), gallery.astype(np.float32)


def truth(scores: np.ndarray, metric: str, k: int) -> np.ndarray:
    key = -scores if get_metric(metric).higher_is_better else scores
    return np.argsort(key, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, expected)]))


def built(kind: str, params: dict[str, Any], metric: str, gallery: np.ndarray) -> Index:
    index = create_index(kind, DIM, metric, **params)
    index.train(gallery)
    index.add(gallery)
    return index


@pytest.mark.parametrize(("kind", "params", "exact_scores", "metric"), CASES)
def test_every_kind_answers_as_the_naive_loop(
    data: tuple[np.ndarray, np.ndarray], kind: str, params: dict, exact_scores: bool, metric: str
) -> None:
    queries, gallery = data
    index = built(kind, params, metric, gallery)
    reference = naive_scores(queries, gallery, metric)
    expected = truth(reference, metric, 10)
    result = index.search(queries, 10)
    assert result.higher_is_better == get_metric(metric).higher_is_better
    assert recall(result.indices, expected) >= (1.0 if exact_scores else 0.6)
    found_scores = np.take_along_axis(reference, result.indices, 1)
    if exact_scores:  # the score of each returned row is its true score, in the metric's sense
        np.testing.assert_allclose(result.scores, found_scores, rtol=1e-5, atol=1e-4)
    # best first, in the metric's own sense
    steps = np.diff(result.scores, axis=1)
    assert (steps <= 1e-6).all() if result.higher_is_better else (steps >= -1e-6).all()
    if index.exact:
        np.testing.assert_allclose(
            result.scores, np.take_along_axis(reference, expected, 1), rtol=1e-5, atol=1e-4
        )


def test_l2_scores_are_euclidean_not_squared(data: tuple[np.ndarray, np.ndarray]) -> None:
    queries, gallery = data
    for kind, params, _ in KINDS[:4]:
        index = built(kind, params, "l2", gallery)
        result = index.search(queries[:1], 1)
        row = int(result.indices[0, 0])
        distance = float(np.sqrt(((gallery[row] - queries[0]).astype(np.float64) ** 2).sum()))
        assert result.scores[0, 0] == pytest.approx(distance, rel=1e-5), kind


@pytest.mark.parametrize(("kind", "params", "exact_scores", "metric"), CASES)
def test_k_beyond_the_rows_pads_with_minus_one_and_the_worst_score(
    data: tuple[np.ndarray, np.ndarray], kind: str, params: dict, exact_scores: bool, metric: str
) -> None:
    queries, gallery = data
    index = built(kind, params, metric, gallery).empty_copy()
    index.add(gallery[:5])
    result = index.search(queries[:3], 8)
    assert (result.indices[:, :5] >= 0).all() and (result.indices[:, 5:] == -1).all()
    assert np.isfinite(result.scores[:, :5]).all()
    assert (result.scores[:, 5:] == get_metric(metric).worst()).all()
    assert all(set(row[:5]) == set(range(5)) for row in result.indices.tolist())


@pytest.mark.parametrize(
    ("kind", "name", "cheap", "thorough"),
    [
        ("ivf_flat", "nprobe", {"nlist": 64, "nprobe": 1}, 64),
        ("ivf_pq", "nprobe", {"nlist": 64, "nprobe": 1, "m": 8, "nbits": 4,
                              "refine": "flat", "k_factor": 64}, 64),
        ("hnsw", "ef_search", {"M": 4, "ef_construction": 8, "ef_search": 1}, 500),
    ],
)  # fmt: skip
def test_search_parameters_apply_at_search_time_and_after_loading(
    tmp_path: Path, kind: str, name: str, cheap: dict, thorough: int
) -> None:
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(2000, DIM)).astype(np.float32)
    queries = rng.normal(size=(50, DIM)).astype(np.float32)
    expected = truth(naive_scores(queries, gallery, "l2"), "l2", 10)
    index = create_index(kind, DIM, "l2", **cheap)
    index.add(gallery)
    low = recall(index.search(queries, 10).indices, expected)
    setattr(index, name, thorough)
    high = recall(index.search(queries, 10).indices, expected)
    assert low < 0.5 and high >= 0.9, (low, high)
    save_index(index, tmp_path / "saved", [str(i) for i in range(2000)])
    loaded, metadata = load_index(tmp_path / "saved")
    assert metadata.params[name] == thorough == getattr(loaded, name)
    np.testing.assert_array_equal(
        loaded.search(queries, 10).indices, index.search(queries, 10).indices
    )
    setattr(loaded, name, cheap[name])
    assert recall(loaded.search(queries, 10).indices, expected) == pytest.approx(low)


@pytest.mark.parametrize(("kind", "params", "exact_scores"), KINDS, ids=lambda v: str(v))
def test_round_trip_keeps_results_and_every_record(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], kind: str, params: dict, exact_scores: bool
) -> None:
    queries, gallery = data
    index = built(kind, params, "cosine", gallery)
    ids = [f"img{i}" for i in range(600)]
    paths = [f"/data/{i}.jpg" for i in range(600)]
    labels = [None if i % 5 == 0 else f"class{i % 3}" for i in range(600)]
    save_index(index, tmp_path / "ix", ids, paths, labels, fingerprint="abc123",
               extra={"threshold": 0.25, "note": "x"})  # fmt: skip
    loaded, metadata = load_index(tmp_path / "ix", expected_fingerprint="abc123")
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert (metadata.ids, metadata.paths, metadata.labels) == (ids, paths, labels)
    assert metadata.threshold == 0.25 and metadata.extra["note"] == "x"
    assert metadata.fingerprint == "abc123" and metadata.kind == kind
    assert metadata.params == index.params == loaded.params
    assert (metadata.metric, metadata.dim, metadata.ntotal) == ("cosine", DIM, 600)
    np.testing.assert_array_equal(loaded.reconstruct([0, 599]), index.reconstruct([0, 599]))


def _swap_state(target: Path, source: Path) -> None:
    """Put ``source``'s FAISS file in ``target`` with a manifest to match, as a hand would."""
    (target / "index.faiss").write_bytes((source / "index.faiss").read_bytes())
    manifest = read_manifest(target)
    write_manifest(target, manifest.kind, manifest.fingerprint, manifest.extra)


@pytest.mark.parametrize(
    ("described", "held", "needle"),
    [
        (("flat", {}), ("hnsw", {"M": 4}), r"IndexHNSWFlat\(M=4\) index, but .* kind 'flat'"),
        (("hnsw", {"M": 8}), ("hnsw", {"M": 4}), r"IndexHNSWFlat\(M=4\).*IndexHNSWFlat\(M=8\)"),
        (("ivf_flat", {"nlist": 4}), ("ivf_flat", {"nlist": 16}), r"nlist=16.*nlist=4"),
        (("ivf_flat", {"nlist": 4}), ("ivf_pq", {"nlist": 4, "m": 4, "nbits": 4}),
         r"IndexIVFPQ\(nlist=4, m=4, nbits=4\) index, but .* kind 'ivf_flat'"),
        (("ivf_pq", {"nlist": 4, "m": 4, "nbits": 4, "refine": "flat"}),
         ("ivf_pq", {"nlist": 4, "m": 4, "nbits": 4}), r"IndexRefineFlat\(IndexIVFPQ"),
        (("ivf_pq", {"nlist": 4, "m": 4, "nbits": 4, "refine": "sq8"}),
         ("ivf_pq", {"nlist": 4, "m": 4, "nbits": 4, "refine": "flat"}), r"IndexScalarQuantizer"),
    ],
)  # fmt: skip
def test_a_faiss_file_of_another_structure_is_refused_in_one_line(
    tmp_path: Path,
    data: tuple[np.ndarray, np.ndarray],
    described: tuple,
    held: tuple,
    needle: str,
) -> None:
    """Before the fix an HNSW file under a folder saying "flat" loaded and answered
    approximately as an exact kind (and PQ codes under "ivf_flat" gave quantised scores)."""
    _, gallery = data
    folders = []
    for name, (kind, params) in (("described", described), ("held", held)):
        index = create_index(kind, DIM, "l2", **params)
        index.add(gallery)
        folders.append(save_index(index, tmp_path / name, [str(i) for i in range(600)]))
    _swap_state(*folders)
    with pytest.raises(ArtefactError, match=needle) as caught:
        load_index(folders[0])
    assert "\n" not in str(caught.value) and str(folders[0] / "index.faiss") in str(caught.value)


def test_a_folder_of_its_own_structure_still_loads_with_mmap(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    _, gallery = data
    params = {"nlist": 4, "m": 4, "nbits": 4, "refine": "sq8", "mmap": True}
    index = create_index("ivf_pq", DIM, "ip", **params)
    index.add(gallery)
    save_index(index, tmp_path / "ix", [str(i) for i in range(600)])
    loaded, _ = load_index(tmp_path / "ix")
    assert loaded.read_only
    np.testing.assert_array_equal(
        loaded.search(gallery[:5], 3).indices, index.search(gallery[:5], 3).indices
    )


@pytest.mark.parametrize(
    ("kind", "params"),
    [("ivf_flat", {"nlist": 8, "nprobe": 2}), ("ivf_pq", {"nlist": 8, "nprobe": 2, "m": 8, "nbits": 5}),
     ("ivf_pq", {"nlist": 8, "nprobe": 2, "m": 8, "nbits": 5, "refine": "sq8"})],
)  # fmt: skip
def test_training_order(data: tuple[np.ndarray, np.ndarray], kind: str, params: dict) -> None:
    """Adding before training trains on the first rows added (as training on them would);
    training on a sample then adding every row indexes every row; retraining is refused."""
    queries, gallery = data
    trained_first = create_index(kind, DIM, "l2", **params)
    trained_first.train(gallery[:300])
    trained_first.add(gallery[:300])
    trained_first.add(gallery[300:])
    added_first = create_index(kind, DIM, "l2", **params)
    assert not added_first.is_trained
    added_first.add(gallery[:300])
    assert added_first.is_trained
    added_first.add(gallery[300:])
    assert added_first.ntotal == trained_first.ntotal == 600
    for name in ("indices", "scores"):
        np.testing.assert_array_equal(
            getattr(added_first.search(queries, 10), name),
            getattr(trained_first.search(queries, 10), name),
        )
    # rows outside the training sample are indexed too, under their own numbers
    np.testing.assert_array_equal(
        trained_first.reconstruct([450, 599]), added_first.reconstruct([450, 599])
    )
    if kind == "ivf_flat":
        trained_first.nprobe = 8
        own = trained_first.search(gallery[::37], 1).indices[:, 0]
        np.testing.assert_array_equal(own, np.arange(600)[::37])
    with pytest.raises(ValueError, match="cannot retrain"):
        trained_first.train(gallery)


@pytest.mark.parametrize(("kind", "params", "exact_scores", "metric"), CASES)
def test_reconstruct_and_empty_copy(
    data: tuple[np.ndarray, np.ndarray], kind: str, params: dict, exact_scores: bool, metric: str
) -> None:
    queries, gallery = data
    index = built(kind, params, metric, gallery)
    rows = [0, 17, 599, 17]
    stored = index.reconstruct(rows)
    assert stored.shape == (4, DIM) and stored.dtype == np.float32
    np.testing.assert_array_equal(stored[1], stored[3])
    np.testing.assert_array_equal(index.reconstruct()[rows], stored)
    if kind != "ivf_pq" or params.get("refine") == "flat":  # kept whole
        np.testing.assert_allclose(stored, get_metric(metric).prepare(gallery[rows]), atol=1e-6)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 600\)"):
        index.reconstruct([600])
    copy = index.empty_copy()
    assert (copy.kind, copy.params, copy.metric, copy.ntotal) == (
        kind,
        index.params,
        index.metric,
        0,
    )
    assert copy.is_trained
    copy.add(gallery)
    np.testing.assert_array_equal(copy.reconstruct(rows), stored)
    np.testing.assert_array_equal(
        copy.search(queries, 10).indices, index.search(queries, 10).indices
    )


@pytest.mark.parametrize("metric", METRIC_NAMES)
@pytest.mark.parametrize(("kind", "params"), [(k, p) for k, p, _ in KINDS[:4]])
def test_duplicated_rows_tie_at_the_top(kind: str, params: dict, metric: str) -> None:
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(200, DIM)).astype(np.float32)
    copies = [3, 50, 51, 199]
    gallery[copies] = 3.0 * gallery[3]  # long rows, so that under ip too they are the best
    query = gallery[3:4]
    index = create_index(kind, DIM, metric, **params)
    index.add(gallery)
    result = index.search(query, 4)
    assert set(result.indices[0].tolist()) == set(copies)
    assert np.ptp(result.scores[0]) == 0.0
    expected = naive_scores(query, gallery[3:4], metric)[0, 0]
    assert result.scores[0, 0] == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(("kind", "params"), [(k, p) for k, p, _ in KINDS[:4]])
def test_zero_rows_under_cosine_score_zero(kind: str, params: dict) -> None:
    """A zero vector stays zero when normalised (no NaN): it scores 0 with every row."""
    rng = np.random.default_rng(6)
    gallery = rng.normal(size=(100, DIM)).astype(np.float32)
    gallery[7] = 0.0
    index = create_index(kind, DIM, "cosine", **params)
    index.add(gallery)
    everything = index.search(gallery[:3], 100)
    assert (everything.scores[everything.indices == 7] == 0.0).all()
    assert (everything.indices == 7).sum() == 3
    zero_query = index.search(np.zeros((1, DIM), np.float32), 5)
    assert (zero_query.scores == 0.0).all() and (zero_query.indices >= 0).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("kind", "params"), [(k, p) for k, p, _ in KINDS])
def test_non_finite_rows_are_refused(kind: str, params: dict, bad: float) -> None:
    rng = np.random.default_rng(8)
    gallery = rng.normal(size=(300, DIM)).astype(np.float32)
    broken = gallery.copy()
    broken[5, 2] = bad
    index = create_index(kind, DIM, "l2", **params)
    with pytest.raises(ValueError, match="training vectors contain NaN or infinite"):
        index.train(broken)
    with pytest.raises(ValueError, match="^vectors contain NaN or infinite"):
        index.add(broken)
    assert index.ntotal == 0
    index.add(gallery)
    with pytest.raises(ValueError, match="queries contain NaN or infinite"):
        index.search(broken[:6], 3)


def test_saved_params_are_plain_json(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    _, gallery = data
    for kind, params, _ in KINDS:
        index = built(kind, params, "cosine", gallery)
        folder = save_index(
            index, tmp_path / f"{kind}{params.get('refine')}", [str(i) for i in range(600)]
        )
        stored = json.loads((folder / "index.json").read_text())
        assert stored["params"] == index.params and stored["kind"] == kind


@pytest.mark.parametrize("kind", ["exact_torch", "flat"])
def test_cosine_rows_of_any_finite_scale_keep_their_direction(kind: str) -> None:
    """Norms are accumulated in float64: in float32 the squared norm of a row of 1e20s
    overflows (and of 1e-30s underflows), which turned the row into a zero vector scoring 0."""
    directions = np.eye(4, 8, dtype=np.float32) + 0.1
    scales = np.array([[1e20], [1e-30], [1.0], [3e-20]], dtype=np.float32)
    index = create_index(kind, 8, "cosine")
    index.add(directions * scales)
    result = index.search(directions * np.float32(1e19), 1)
    assert result.indices[:, 0].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
