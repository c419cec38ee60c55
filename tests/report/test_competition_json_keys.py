"""Competition JSON keys: file names must be unique (an error names both files), relative paths
keep repeated file names apart, ids are written as given."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lookalike.index.result import SearchResult
from lookalike.report.submission import read_competition_json, write_competition_json

QUERIES = ["/data/query/a/x.jpg", "/data/query/b/x.jpg", "/data/query/b/y.jpg"]
GALLERY = ["/data/gallery/cats/1.jpg", "/data/gallery/dogs/1.jpg", "/data/gallery/2.jpg",
           "/data/gallery/dogs/deep/3.jpg"]


def ranked(seed: int) -> SearchResult:
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.random((len(QUERIES), len(GALLERY))), axis=1)[:, ::-1]
    indices = np.stack([rng.permutation(len(GALLERY)) for _ in QUERIES])
    return SearchResult(scores.copy(), indices)


def test_repeated_file_names_are_an_error_naming_both_files(tmp_path: Path) -> None:
    result = ranked(0)
    with pytest.raises(ValueError, match=r"query name 'x.jpg' appears more than once "
                       r"\(/data/query/a/x.jpg and /data/query/b/x.jpg\); pass names='relpath'"):
        write_competition_json(tmp_path / "s.json", result, QUERIES, GALLERY)
    unique_queries = ["/data/query/a/x.jpg", "/data/query/b/z.jpg", "/data/query/b/y.jpg"]
    with pytest.raises(ValueError, match=r"gallery name '1.jpg' appears more than once "
                       r"\(/data/gallery/cats/1.jpg and /data/gallery/dogs/1.jpg\)"):
        write_competition_json(tmp_path / "s.json", result, unique_queries, GALLERY)
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("roots", [False, True])
def test_relpath_keys_are_paths_relative_to_each_folder(tmp_path: Path, roots: bool) -> None:
    result = ranked(1)
    options = {"query_root": "/data/query", "gallery_root": "/data/gallery"} if roots else {}
    path = write_competition_json(
        tmp_path / "s.json", result, QUERIES, GALLERY, names="relpath", k=3, **options
    )
    expected = {
        os.path.relpath(query, "/data/query"): [
            os.path.relpath(GALLERY[row], "/data/gallery") for row in rows[:3]
        ]
        for query, rows in zip(QUERIES, result.indices)
    }
    assert json.loads(path.read_text()) == expected
    assert read_competition_json(path) == expected
    assert set(expected) == {"a/x.jpg", "b/x.jpg", "b/y.jpg"}


def test_relpath_keys_from_a_root_above_the_images_and_outside_it(tmp_path: Path) -> None:
    result = ranked(2)
    path = write_competition_json(tmp_path / "s.json", result, QUERIES, GALLERY, names="relpath",
                                  query_root="/data", gallery_root="/data", k=1)
    assert set(json.loads(path.read_text())) == {"query/a/x.jpg", "query/b/x.jpg", "query/b/y.jpg"}
    with pytest.raises(ValueError, match="query '/data/query/a/x.jpg' is not inside /elsewhere"):
        write_competition_json(tmp_path / "s.json", result, QUERIES, GALLERY, names="relpath",
                               query_root="/elsewhere")


def test_id_keys_as_given_and_repeated_ids_refused(tmp_path: Path) -> None:
    result = ranked(3)
    ids = ["q1", "q2", "q3"]
    gallery_ids = ["g1", "g2", "g3", "g4"]
    path = write_competition_json(tmp_path / "s.json", result, ids, gallery_ids, names="id", k=2)
    table = read_competition_json(path)
    assert table == {q: [gallery_ids[r] for r in rows[:2]] for q, rows in zip(ids, result.indices)}
    with pytest.raises(ValueError, match=r"gallery name 'g1' appears more than once \(g1 and g1\)"
                       r"; give every image a unique name"):
        write_competition_json(tmp_path / "s.json", result, ids, ["g1", "g2", "g1", "g4"],
                               names="id")


def test_write_submission_and_the_command_line_take_the_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.main import app
    from lookalike.embed.store import EmbeddingSet
    from lookalike.pipeline.indexing import build_index
    from lookalike.pipeline.submission import write_submission

    rng = np.random.default_rng(4)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    info = {"fingerprint": "cafe"}
    gallery = EmbeddingSet(unit(rng.normal(size=(4, 8))), ["g1", "g2", "g3", "g4"], GALLERY,
                           ["c", "d", "c", "d"], info)
    queries = EmbeddingSet(unit(rng.normal(size=(3, 8))), ["q1", "q2", "q3"], QUERIES,
                           [None] * 3, info)
    queries.save(tmp_path / "q")
    build_index(gallery, tmp_path / "index")
    with pytest.raises(ValueError, match="'x.jpg' appears more than once.*names='relpath'"):
        write_submission(tmp_path / "index", queries, tmp_path / "s.json", k=2)
    write_submission(tmp_path / "index", queries, tmp_path / "s.json", k=2, names="relpath")
    scores = queries.embeddings @ gallery.embeddings.T
    expected = {
        os.path.relpath(q, "/data/query"): [
            os.path.relpath(GALLERY[g], "/data/gallery") for g in np.argsort(-scores[i])[:2]
        ]
        for i, q in enumerate(QUERIES)
    }
    assert read_competition_json(tmp_path / "s.json") == expected
    write_submission(tmp_path / "index", queries, tmp_path / "ids.json", k=2, names="id")
    assert list(read_competition_json(tmp_path / "ids.json")) == ["q1", "q2", "q3"]

    runner = CliRunner()
    result = runner.invoke(app, ["submission", str(tmp_path / "index"), str(tmp_path / "q"),
                                 "-o", str(tmp_path / "cli.json"), "-k", "2"])
    assert result.exit_code == 2 and "names='relpath'" in result.output
    result = runner.invoke(app, ["submission", str(tmp_path / "index"), str(tmp_path / "q"),
                                 "-o", str(tmp_path / "cli.json"), "-k", "2",
                                 "--json-names", "relpath"])
    assert result.exit_code == 0, result.output
    assert read_competition_json(tmp_path / "cli.json") == expected
