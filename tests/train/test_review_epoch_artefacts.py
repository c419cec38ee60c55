"""Review of an epoch's results file against a naive loop: under a distance (L2) the nearest
gallery images come first, with queries in the gallery a query never lists itself, every
readable query appears once in the split's order with k entries, and rewriting an epoch replaces
its folder whole."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lookalike.data.records import ImageRecord, ImageSet
from lookalike.train.epoch_artefacts import (
    EpochArtefacts,
    remove_epochs_from,
    results_file_name,
)
from lookalike.train.validation import ValidationSet, rank_validation
from lookalike.utils.folders import verify_folder

K = 4


def all_vs_all(root: Path, count: int = 9) -> ValidationSet:
    """Every image is a query against all the others (its own row excluded)."""
    records = [ImageRecord(f"{i}.jpg", root / f"c{i % 3}" / f"img{i}.jpg", f"c{i % 3}")
               for i in range(count)]
    images = ImageSet(records, "val")
    order = np.arange(count)[::-1].copy()  # queries in another order than the gallery
    return ValidationSet(images, images.labels, order, np.arange(count), True, ks=(1,),
                         precision_ks=(), depth=K)


def naive_l2(embeddings: np.ndarray, query_rows: list[int], gallery_rows: list[int],
             exclude_self: bool) -> list[list[int]]:
    rows = []
    for q in query_rows:
        distances = [(float(np.linalg.norm(embeddings[g].astype(np.float64) - embeddings[q])), g)
                     for g in gallery_rows if not (exclude_self and g == q)]
        rows.append([g for _, g in sorted(distances)[:K]])
    return rows


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_first_no_self_match_every_query_once(tmp_path: Path, metric: str) -> None:
    validation = all_vs_all(tmp_path / "data")
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(9, 6)).astype(np.float32)
    if metric == "cosine":  # the naive L2 order on unit rows is the cosine order
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embedded = np.ones(9, dtype=bool)
    embedded[4] = False  # unreadable: neither a query nor a neighbour
    ranked = rank_validation(validation, embeddings, embedded, metric=metric)
    folder = EpochArtefacts(tmp_path / "run", validation, True, K, "id").write(0, 1, ranked)

    table = json.loads((folder / results_file_name(0)).read_text())
    queries = [int(q) for q in validation.query_rows if q != 4]
    readable = [g for g in range(9) if g != 4]
    expected = {f"{q}.jpg": [f"{g}.jpg" for g in row]
                for q, row in zip(queries, naive_l2(embeddings, queries, readable, True))}
    assert list(table) == list(expected)  # the split's query order, each once
    assert table == expected
    assert all(len(row) == K and f"{q}.jpg" not in row for q, row in zip(queries, table.values()))


def test_rewriting_an_epoch_replaces_its_folder_whole(tmp_path: Path) -> None:
    validation = all_vs_all(tmp_path / "data")
    rng = np.random.default_rng(6)
    first = rank_validation(validation, rng.normal(size=(9, 6)).astype(np.float32),
                            np.ones(9, dtype=bool), metric="l2")
    artefacts = EpochArtefacts(tmp_path / "run", validation, True, K, "id")
    folder = artefacts.write(2, 10, first)
    (folder / "stray.txt").write_text("left by an earlier run")
    embedded = np.ones(9, dtype=bool)
    embedded[0] = False
    second = rank_validation(validation, rng.normal(size=(9, 6)).astype(np.float32), embedded,
                             metric="l2")
    artefacts.write(2, 20, second)
    verify_folder(folder, kind="epoch")
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "metrics.json", results_file_name(2)]
    assert json.loads((folder / "metrics.json").read_text())["step"] == 20
    table = json.loads((folder / results_file_name(2)).read_text())
    assert "0.jpg" not in table and all("0.jpg" not in row for row in table.values())
    assert [p.name for p in folder.parent.iterdir()] == ["epoch_2"]


def test_a_query_left_out_of_the_results_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    validation = all_vs_all(tmp_path / "data")
    embedded = np.ones(9, dtype=bool)
    embedded[[3, 4]] = False
    ranked = rank_validation(validation, np.eye(9, 6, dtype=np.float32) + 0.1, embedded)
    with caplog.at_level(logging.WARNING, logger="lookalike.train.epoch_artefacts"):
        folder = EpochArtefacts(tmp_path / "run", validation, True, K, "id").write(1, 5, ranked)
    assert "2 of 9 queries could not be read and are not in results_epoch_1.json" in caplog.text
    assert len(json.loads((folder / results_file_name(1)).read_text())) == 7


def test_training_from_epoch_n_removes_the_epochs_an_earlier_run_left_from_n_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    validation = all_vs_all(tmp_path / "data")
    ranked = rank_validation(validation, np.eye(9, 6, dtype=np.float32) + 0.1,
                             np.ones(9, dtype=bool))
    artefacts = EpochArtefacts(tmp_path / "run", validation, True, K, "id")
    for epoch in (0, 1, 2, 5, 11):
        artefacts.write(epoch, epoch * 10, ranked)
    (tmp_path / "run" / "epochs" / "notes").mkdir()  # not an epoch folder: left alone

    with caplog.at_level(logging.WARNING, logger="lookalike.train.epoch_artefacts"):
        artefacts.on_train_start(
            SimpleNamespace(current_epoch=2, global_rank=0), None  # type: ignore[arg-type]
        )
    assert sorted(p.name for p in (tmp_path / "run" / "epochs").iterdir()) == [
        "epoch_0", "epoch_1", "notes"]
    assert "epoch_11" in caplog.text and "starts at epoch 2" in caplog.text
    artefacts.on_train_start(
        SimpleNamespace(current_epoch=0, global_rank=1), None  # type: ignore[arg-type]
    )
    assert (tmp_path / "run" / "epochs" / "epoch_0").is_dir()  # only rank 0 removes
    assert remove_epochs_from(tmp_path / "run", 0) == [
        tmp_path / "run" / "epochs" / "epoch_0", tmp_path / "run" / "epochs" / "epoch_1"]
    assert remove_epochs_from(tmp_path / "absent", 0) == []
