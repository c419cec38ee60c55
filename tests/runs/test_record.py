"""The run record: file layout, run.json validation, the ranking file, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.ranking import rank
from lookalike.runs import RunRecord, RunSettings, parse_settings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must hold a JSON object"),
        ({"kind": "serve"}, "valid names: evaluate, train"),
        ({"metric": "hamming"}, "valid names: cosine, ip, l1, l2"),
        ({"threshold": "high"}, "threshold must be a finite number"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"threshold": True}, "threshold must be a finite number"),
        ({"k": 0}, "k must be a positive integer"),
        ({"ranking": 3}, "ranking must be a path"),
    ],
)
def test_bad_settings_name_the_file_and_field(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings(raw, Path("run.json"))


def test_settings_round_trip_and_paths(tmp_path: Path) -> None:
    record = RunRecord(tmp_path)
    assert record.read_settings() is None and record.read_raw() == {}
    settings = RunSettings(query_embeddings="q", gallery_embeddings="/abs/g", k=5)
    record.write_settings(settings, extra_key=1)
    assert record.read_settings() == settings
    assert record.read_raw()["extra_key"] == 1
    assert record.resolve("q") == tmp_path / "q"
    assert record.resolve("/abs/g") == Path("/abs/g")
    assert record.resolve(None) is None
    assert record.relative(tmp_path / "embeddings" / "all") == "embeddings/all"
    record.update_settings(threshold=0.5)
    assert record.read_settings().threshold == 0.5
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        record.update_settings(threshold=float("inf"))
    assert record.read_settings().threshold == 0.5  # the bad update wrote nothing


def test_embeddings_and_ranking_are_read_through_run_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    labels = ["a", "a", "b", "b", "c", "c"]
    gallery = EmbeddingSet(vectors, [str(i) for i in range(6)], [f"{i}.png" for i in range(6)], labels)
    record = RunRecord(tmp_path)
    gallery.save(record.embeddings_dir("all"))
    ranking = rank(vectors, vectors, labels, labels, k=3, exclude_rows=np.arange(6))
    record.write_ranking(ranking)
    record.write_settings(
        RunSettings(query_embeddings="embeddings/all", gallery_embeddings="embeddings/all",
                    ranking="ranking.npz", exclude_self=True)
    )
    loaded = record.load_embeddings("gallery_embeddings")
    np.testing.assert_array_equal(loaded.embeddings, vectors)
    assert record.load_embeddings("train_embeddings") is None
    with pytest.raises(ValueError, match="valid names"):
        record.load_embeddings("test_embeddings")
    again = record.load_ranking()
    np.testing.assert_array_equal(again.neighbours.indices, ranking.neighbours.indices)


def test_malformed_run_json_names_itself(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="run.json is not valid JSON"):
        RunRecord(tmp_path).read_settings()
    (tmp_path / "run.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        RunRecord(tmp_path).read_raw()
