"""The real ``lookalike embed`` and ``lookalike evaluate`` over the generated corpus of broken and
odd files (see broken_corpus.py): no crash, every readable image embedded exactly once under its
label, every unreadable one listed in skipped.csv with a reason, and no query whose best match is
its own copy reached through a link.

The counts each test measures are printed (``pytest -s`` shows them); every failure count is 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from broken_corpus import DUPLICATE, EMBEDDED, SKIPPED, Corpus, unlock, write_corpus

from lookalike.data.loading import BrokenImageError, load_record
from lookalike.data.sources import folder_source

TINY_MODEL = ["--model", "timm:test_resnet", "--weights", "none", "--pool", "gap"]
TINY_OVERRIDES = ["model.backbone=timm:test_resnet", "model.weights=none", "model.pool=gap"]
# Why some entries are skipped, as skipped.csv must say it.
EXPECTED_REASONS = {
    "gamma ñ/bomb.png": "decompression bomb",
    "gamma ñ/fifo.jpg": "not a regular file",
    "gamma ñ/dangling.jpg": "broken symbolic link",
    "beta/escape": "outside",
    "beta/stranger.png": "outside",
    "alpha/empty.jpg": "empty",
    "alpha/half.jpg": "truncated",
    "beta/words.jpg": "not an image",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    base = tmp_path_factory.mktemp("corpus")
    written = write_corpus(base / "root", base / "outside")
    yield written
    unlock(written)


def lookalike(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``lookalike`` command in a fresh process."""
    command = [sys.executable, "-m", "lookalike.cli.main", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def crashed(run: subprocess.CompletedProcess[str]) -> bool:
    """A non-zero exit or a traceback anywhere in the output."""
    return run.returncode != 0 or "Traceback" in run.stdout + run.stderr


def test_the_corpus_is_big_and_varied(corpus: Corpus) -> None:
    counts = {outcome: len(corpus.ids(outcome)) for outcome in (EMBEDDED, SKIPPED, DUPLICATE)}
    print(f"\ncorpus: {len(corpus.entries)} entries {counts}; not built: {corpus.not_built}")
    assert len(corpus.entries) >= 50
    assert counts[EMBEDDED] >= 30 and counts[SKIPPED] >= 15 and counts[DUPLICATE] >= 2


def test_the_source_lists_each_entry_once_and_loading_agrees(corpus: Corpus) -> None:
    images = folder_source(corpus.root)
    listed = {record.id: record for record in images.records}
    assert len(listed) == len(images)
    assert set(listed) == corpus.ids(EMBEDDED) | corpus.ids(SKIPPED)
    wrong_loads = []
    for image_id, record in listed.items():
        assert record.label == corpus.label_of(image_id), image_id
        try:
            load_record(record)
            readable = True
        except BrokenImageError as error:
            readable = False
            assert error.reason and "\n" not in error.reason
        if readable != (image_id in corpus.ids(EMBEDDED)):
            wrong_loads.append(image_id)
    assert wrong_loads == []


@pytest.mark.slow
def test_embed_over_the_corpus(corpus: Corpus, tmp_path: Path) -> None:
    output = tmp_path / "embeddings"
    run = lookalike("embed", corpus.root, "-o", output, *TINY_MODEL, "--workers", "2",
                    "--device", "cpu", "--batch-size", "7", cwd=tmp_path)
    crashes = int(crashed(run))
    assert crashes == 0, run.stderr[-3000:]

    records = pd.read_parquet(output / "records.parquet")
    embedded = records["id"].tolist()
    skipped = pd.read_csv(output / "skipped.csv", keep_default_na=False)
    wrong_labels = [
        i for i, label in zip(embedded, records["label"]) if label != corpus.label_of(i)
    ]
    twice = sorted({i for i in embedded if embedded.count(i) > 1})
    silent_losses = sorted(corpus.ids(EMBEDDED) - set(embedded))
    unreported = sorted(corpus.ids(SKIPPED) - set(skipped["id"]))
    no_reason = skipped.loc[skipped["reason"].str.strip() == "", "id"].tolist()
    extra = sorted(set(embedded) - corpus.ids(EMBEDDED))  # duplicates, or escaped the root
    print(
        f"\nembed: {len(embedded)} embedded, {len(skipped)} skipped of {len(corpus.entries)}; "
        f"crashes {crashes}, wrong labels {len(wrong_labels)}, embedded twice {len(twice)}, "
        f"silent losses {len(silent_losses)}, unreported {len(unreported)}, "
        f"no reason {len(no_reason)}, extra {len(extra)}"
    )
    assert (wrong_labels, twice, silent_losses, unreported, no_reason, extra) == (
        [], [], [], [], [], []
    )
    assert set(skipped["id"]) == corpus.ids(SKIPPED)
    reasons = dict(zip(skipped["id"], skipped["reason"]))
    for image_id, expected in EXPECTED_REASONS.items():
        assert expected in reasons[image_id], (image_id, reasons[image_id])


@pytest.mark.slow
def test_evaluate_over_the_corpus(corpus: Corpus, tmp_path: Path) -> None:
    run_folder = tmp_path / "run"
    run = lookalike("evaluate", "--source", corpus.root, "--protocol", "all_vs_all",
                    "-o", run_folder, *TINY_OVERRIDES, "embed.num_workers=0",
                    "embed.device=cpu", "report=false", "k=3", cwd=tmp_path)
    crashes = int(crashed(run))
    assert crashes == 0, run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing outside --output

    results = pd.read_csv(run_folder / "results.csv", keep_default_na=False)
    skipped = pd.read_csv(run_folder / "skipped.csv", keep_default_na=False)
    queries = set(results["query_id"])
    top1 = results[results["rank"] == results.groupby("query_id")["rank"].transform("min")]
    real = {i: os.path.realpath(corpus.root / i) for i in corpus.ids(EMBEDDED)}
    own_copies = [
        (q, g) for q, g in zip(top1["query_id"], top1["gallery_id"]) if real[q] == real[g]
    ]
    silent_losses = sorted(corpus.ids(EMBEDDED) - queries)
    unreported = sorted(corpus.ids(SKIPPED) - set(skipped["id"]))
    print(
        f"\nevaluate: {len(queries)} queries, {len(skipped)} skipped; crashes {crashes}, "
        f"top-1 own copy {len(own_copies)}, silent losses {len(silent_losses)}, "
        f"unreported {len(unreported)}"
    )
    assert (own_copies, silent_losses, unreported) == ([], [], [])
    assert queries == corpus.ids(EMBEDDED)
    assert (run_folder / "metrics.json").is_file()
