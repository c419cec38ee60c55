"""Reading a run folder: optional files, validation of run.json, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.report.run_folder import RunFolder, load_run_folder
from lookalike.runs import RunRecord
from lookalike.utils.folders import ArtefactError


def test_reads_what_exists_and_lists_the_rest(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"kind": "evaluate", "query_embeddings": "q",
                                                   "gallery_embeddings": "/abs/g", "k": 5}))
    (tmp_path / "results.csv").write_text(
        "query_id,rank,gallery_id,gallery_path,score\n"
        "007,2,b,b.png,0.5\n007,1,no_match,,\n001,1,a,a.png,0.9\n"
    )
    RunRecord(tmp_path).finish()
    folder = load_run_folder(tmp_path)
    assert folder.settings.k == 5 and folder.settings.metric == "cosine"
    assert folder.settings.threshold is None and folder.settings.exclude_self is False
    assert folder.metrics is None and folder.history is None
    assert folder.missing == ["metrics.json", "variants.csv", "history.csv", "config.yaml",
                              "skipped.csv"]
    results = folder.results
    assert results["query_id"].tolist() == ["001", "007", "007"]  # ids stay strings
    assert results["rank"].tolist() == [1, 1, 2]
    assert results["gallery_id"].tolist() == ["a", "no_match", "b"]
    assert results["score"].isna().tolist() == [False, True, False]
    assert folder.load_ranking() is None


def _load_finished(folder: Path) -> RunFolder:
    RunRecord(folder).finish()  # as a job would, after writing its (here malformed) files
    return load_run_folder(folder)


def test_malformed_files_name_themselves(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        _load_finished(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "results.csv").write_text("query_id,rank\nq,1\n")
    with pytest.raises(ValueError, match="lacks the column"):
        _load_finished(tmp_path)
    (tmp_path / "results.csv").write_text("query_id,rank,gallery_id,gallery_path,score\nq,x,g,,1\n")
    with pytest.raises(ValueError, match="rank column must hold integers"):
        _load_finished(tmp_path)


def test_an_unfinished_or_changed_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"recall@1": 0.5}')
    with pytest.raises(ArtefactError, match="manifest.json is missing"):
        load_run_folder(tmp_path)
    assert load_run_folder(tmp_path, verify=False).metrics == {"recall@1": 0.5}
    RunRecord(tmp_path).finish()
    assert load_run_folder(tmp_path).metrics == {"recall@1": 0.5}
    (tmp_path / "metrics.json").write_text('{"recall@1": 0.9}')
    with pytest.raises(ArtefactError, match="metrics.json does not match its checksum"):
        load_run_folder(tmp_path)
