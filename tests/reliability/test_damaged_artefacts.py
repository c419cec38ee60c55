"""Damaged copies of every artefact file, fed to every verb that reads it, through the real CLI.

Each file of each artefact kind (every file its manifest lists, and the manifest itself) is
truncated, zeroed, bit-flipped or deleted in a copy of the pristine folder, and every verb that
reads that kind is run on the copy. The expectation is the same for all: exit status 2, one
``error:`` line naming the damaged file, no traceback, and nothing written where the verb writes.
A control runs every verb on the pristine artefacts first, so that a refusal is the damage's doing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from artefact_kit import (
    CPU,
    DAMAGES,
    QUIET_EVALUATE,
    Artefacts,
    artefact_files,
    assert_refused,
    checked,
    copy_artefact,
    damage,
    invoke,
    snapshot,
)

from lookalike.runs import RunRecord
from lookalike.utils.folders import verify_folder

# A verb: (pristine artefacts, the folder under test, a scratch folder) -> (argv, outputs).
Verb = Callable[[Artefacts, Path, Path], tuple[list[object], list[Path]]]


def _embeddings_verbs() -> dict[str, Verb]:
    def evaluate(*sides: str) -> Verb:
        def verb(a: Artefacts, emb: Path, out: Path) -> tuple[list[object], list[Path]]:
            folders = {"embeddings": emb, "query": a.embeddings, "gallery": a.embeddings}
            if "embeddings" in sides:
                options = ["--embeddings", emb, "--protocol", "all_vs_all"]
            else:
                folders.update({side: emb for side in sides})
                options = ["--query-embeddings", folders["query"],
                           "--gallery-embeddings", folders["gallery"]]
            return ["evaluate", *options, "-o", out / "run", *QUIET_EVALUATE], [out / "run"]

        return verb

    return {
        "index": lambda a, emb, out: (["index", emb, "-o", out / "idx"], [out / "idx"]),
        "search": lambda a, emb, out: (
            ["search", a.flat_index, emb, "-o", out / "r.csv"], [out / "r.csv"]),
        "submission": lambda a, emb, out: (
            ["submission", a.flat_index, emb, "-o", out / "s.csv"], [out / "s.csv"]),
        "tune-threshold": lambda a, emb, out: (
            ["tune-threshold", "--query-embeddings", emb, "--gallery-embeddings", emb,
             "-o", out / "thr"], [out / "thr"]),
        "evaluate --embeddings": evaluate("embeddings"),
        "evaluate --query-embeddings": evaluate("query"),
        "evaluate --gallery-embeddings": evaluate("gallery"),
    }


def _index_verbs() -> dict[str, Verb]:
    return {
        "search": lambda a, idx, out: (
            ["search", idx, a.embeddings, "-o", out / "r.csv"], [out / "r.csv"]),
        "submission": lambda a, idx, out: (
            ["submission", idx, a.embeddings, "-o", out / "s.csv"], [out / "s.csv"]),
        "tune-threshold --index": lambda a, idx, out: (
            ["tune-threshold", "--query-embeddings", a.embeddings, "--gallery-embeddings",
             a.embeddings, "--index", idx, "-o", out / "thr"], [out / "thr"]),
        "evaluate rejection.index": lambda a, idx, out: (
            ["evaluate", "--embeddings", a.embeddings, "--protocol", "all_vs_all",
             "-o", out / "run", f"rejection.index={idx}", *QUIET_EVALUATE], [out / "run"]),
    }


def _model_verbs() -> dict[str, Verb]:
    return {
        "embed --checkpoint": lambda a, model, out: (
            ["embed", a.images, "-o", out / "emb", "--checkpoint", model, *CPU], [out / "emb"]),
        "search --checkpoint": lambda a, model, out: (
            ["search", a.flat_index, a.images, "-o", out / "r.csv", "--checkpoint", model, *CPU],
            [out / "r.csv"]),
        "evaluate --checkpoint": lambda a, model, out: (
            ["evaluate", "--source", a.images, "--checkpoint", model, "--protocol", "all_vs_all",
             "-o", out / "run", *QUIET_EVALUATE], [out / "run"]),
    }


def _run_verbs() -> dict[str, Verb]:
    return {
        "report": lambda a, run, out: (["report", run], []),  # writes into the run: checked below
        "report -o": lambda a, run, out: (
            ["report", run, "-o", out / "page.html"], [out / "page.html"]),
    }


# Every file each kind's manifest lists (the control test checks the lists are complete).
FILES = {
    "embeddings": ["embeddings.npy", "info.json", "records.parquet", "shards/shard_00000.npz",
                   "shards/shard_00001.npz", "skipped.csv", "manifest.json"],
    "flat index": ["index.faiss", "index.json", "records.parquet", "manifest.json"],
    "exact index": ["index.json", "records.parquet", "vectors.npy", "manifest.json"],
    "model": ["embedder.json", "model.safetensors", "manifest.json"],
    "run": ["config.yaml", "embeddings/all/embeddings.npy", "embeddings/all/info.json",
            "embeddings/all/manifest.json", "embeddings/all/records.parquet", "metrics.json",
            "ranking.npz", "report.html", "results.csv", "run.json", "manifest.json"],
}
VERBS = {
    "embeddings": _embeddings_verbs(),
    "flat index": _index_verbs(),
    "exact index": _index_verbs(),
    "model": _model_verbs(),
    "run": _run_verbs(),
}
FOLDER = {
    "embeddings": lambda a: a.embeddings,
    "flat index": lambda a: a.flat_index,
    "exact index": lambda a: a.exact_index,
    "model": lambda a: a.model,
    "run": lambda a: a.run,
}
CASES = [
    pytest.param(kind, name, how, verb, id=f"{kind}:{name}:{how}:{verb}")
    for kind, names in FILES.items()
    for name in names
    for how in DAMAGES
    for verb in VERBS[kind]
    # `report` rewrites its own report.html: that damage is repaired (see the test below).
    if not (verb == "report" and name == "report.html")
]


def test_the_matrix_covers_every_file_and_every_verb_works_on_pristine_artefacts(
    artefacts: Artefacts, tmp_path: Path
) -> None:
    for kind, names in FILES.items():
        assert artefact_files(FOLDER[kind](artefacts)) == names, kind
    for kind, verbs in VERBS.items():
        for name, verb in verbs.items():
            scratch = tmp_path / f"{kind}-{name}".replace(" ", "_")
            scratch.mkdir()
            folder = copy_artefact(FOLDER[kind](artefacts), scratch / "artefact")
            args, outputs = verb(artefacts, folder, scratch)
            checked(invoke(*args))
            for output in outputs:
                assert output.exists(), (kind, name)
    assert len(CASES) == 444


@pytest.fixture(autouse=True)
def _no_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports draw the PCA map: no numba compile."""
    monkeypatch.setitem(sys.modules, "umap", None)


@pytest.mark.parametrize(("kind", "name", "how", "verb"), CASES)
def test_a_damaged_file_is_refused_in_one_line_naming_it(
    artefacts: Artefacts, tmp_path: Path, kind: str, name: str, how: str, verb: str
) -> None:
    folder = copy_artefact(FOLDER[kind](artefacts), tmp_path / "artefact")
    damage(folder / name, how)
    before = snapshot(folder)
    args, outputs = VERBS[kind][verb](artefacts, folder, tmp_path)
    assert_refused(invoke(*args), folder / name, outputs)
    assert snapshot(folder) == before  # the damaged artefact itself is left as it was


@pytest.mark.parametrize("how", DAMAGES)
def test_report_repairs_its_own_damaged_page(
    artefacts: Artefacts, tmp_path: Path, how: str
) -> None:
    run = copy_artefact(artefacts.run, tmp_path / "run")
    damage(run / "report.html", how)
    checked(invoke("report", run))
    assert RunRecord(run).verify().files["report.html"].size > 10_000


@pytest.mark.parametrize("name", FILES["flat index"])
@pytest.mark.parametrize("how", DAMAGES)
def test_rebuilding_a_damaged_index_folder_replaces_it_whole(
    artefacts: Artefacts, tmp_path: Path, name: str, how: str
) -> None:
    index = copy_artefact(artefacts.flat_index, tmp_path / "idx")
    damage(index / name, how)
    checked(invoke("index", artefacts.embeddings, "-o", index, "--threshold", "0.5"))
    assert snapshot(index) == snapshot(artefacts.flat_index)  # byte for byte the pristine build


def test_pristine_artefacts_were_never_touched(artefacts: Artefacts) -> None:
    for kind in FILES:
        verify_folder(FOLDER[kind](artefacts))
