"""An epoch's folder from one validation: the results file is the naive cosine ranking of the
readable queries against the readable gallery, named as asked; written whole, with a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.train.epoch_artefacts import EpochArtefacts, epoch_folder, results_file_name
from lookalike.train.validation import ValidationSet, rank_validation
from lookalike.utils.folders import verify_folder

K = 3


def val_set(root: Path) -> ValidationSet:
    """6 gallery images in two folders (file names repeat across them), then 3 queries."""
    gallery = [
        ImageRecord(f"g/{side}/{i}.jpg", root / "gallery" / side / f"{i}.jpg", f"c{i % 2}")
        for side in ("left", "right") for i in range(3)
    ]
    queries = [ImageRecord(f"q/{i}.jpg", root / "query" / "sub" / f"{i}.jpg", f"c{i % 2}")
               for i in range(3)]
    images = ImageSet([*gallery, *queries], "val")
    return ValidationSet(images, images.labels, np.arange(6, 9), np.arange(6), False,
                         ks=(1, 2), precision_ks=(2,), depth=K)


def naive(embeddings: np.ndarray, query_rows: list[int], gallery_rows: list[int]) -> list[list]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    rows = []
    for q in query_rows:
        scores = unit[gallery_rows] @ unit[q]
        rows.append([gallery_rows[i] for i in np.argsort(-scores, kind="stable")[:K]])
    return rows


@pytest.mark.parametrize("names", ["relpath", "id"])
def test_the_results_file_is_the_naive_ranking_of_readable_images(
    tmp_path: Path, names: str
) -> None:
    validation = val_set(tmp_path / "data")
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(9, 8)).astype(np.float32)
    embedded = np.ones(9, dtype=bool)
    embedded[[1, 7]] = False  # a gallery image and a query that could not be read
    ranked = rank_validation(validation, embeddings, embedded)

    artefacts = EpochArtefacts(tmp_path / "run", validation, True, K, names)
    folder = artefacts.write(4, 40, ranked)
    assert folder == epoch_folder(tmp_path / "run", 4)
    verify_folder(folder, kind="epoch")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["epoch"] == 4 and metrics["step"] == 40
    assert metrics["recall@2"] == ranked.metrics["recall@2"]
    assert {"recall@1", "recall@2", "precision@2"} <= set(metrics)
    assert "recall@5" not in metrics

    records = validation.images.records

    def name(row: int) -> str:
        if names == "id":
            return records[row].id
        base = Path(tmp_path / "data" / ("query/sub" if row >= 6 else "gallery"))
        return records[row].path.relative_to(base).as_posix()

    expected = {
        name(q): [name(g) for g in row]
        for q, row in zip([6, 8], naive(embeddings, [6, 8], [0, 2, 3, 4, 5]))
    }
    assert json.loads((folder / results_file_name(4)).read_text()) == expected


def test_basenames_that_repeat_are_refused_when_the_callback_is_made(tmp_path: Path) -> None:
    validation = val_set(tmp_path / "data")
    with pytest.raises(ValueError, match=r"gallery name '0.jpg' appears more than once "
                       r"\(.*left/0.jpg and .*right/0.jpg\); pass names='relpath'"):
        EpochArtefacts(tmp_path / "run", validation, True, K, "basename")
    # without a results file the names do not matter
    EpochArtefacts(tmp_path / "run", validation, False, K, "basename")
