"""Every split is ranked exactly once per job: ``lookalike evaluate`` and ``lookalike train``.

:func:`lookalike.ranking.rank` logs one "ranking Q queries against N gallery items" record per
call; the tests count those records per (Q, N) while the real command runs, report included.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.config import save_config
from tiny_training import tiny_config, write_images

RANK_LOGGER = "lookalike.ranking.compute"
runner = CliRunner()


def _rankings(caplog: pytest.LogCaptureFixture) -> Counter[tuple[int, int]]:
    """``{(queries, gallery items): calls}`` of :func:`lookalike.ranking.rank` so far."""
    calls: Counter[tuple[int, int]] = Counter()
    for record in caplog.records:
        if record.name == RANK_LOGGER:
            match = re.match(r"ranking (\d+) queries against (\d+) gallery", record.getMessage())
            assert match, record.getMessage()
            calls[(int(match.group(1)), int(match.group(2)))] += 1
    return calls


def _invoke(*args: object) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("extra", [[], ["postprocess.qe=true", "index.kind=hnsw"]])
def test_evaluate_ranks_once(
    image_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: list[str]
) -> None:
    caplog.set_level(logging.INFO, logger=RANK_LOGGER)
    _invoke(
        "evaluate", "--source", image_folder, "--protocol", "all_vs_all", "-o", tmp_path / "run",
        "model.backbone=timm:resnet18", "model.weights=none", "embed.num_workers=0",
        "embed.device=cpu", *extra,
    )
    assert (tmp_path / "run" / "report.html").is_file()
    assert (tmp_path / "run" / "ranking.npz").is_file()
    assert _rankings(caplog) == Counter({(12, 12): 1})


@pytest.mark.slow
def test_train_ranks_the_test_split_once_and_val_once_per_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RANK_LOGGER)
    config = tiny_config(write_images(tmp_path / "images"), tmp_path / "run",
                         "trainer.max_epochs=2")
    save_config(config, tmp_path / "train.yaml")
    _invoke("train", "--config", tmp_path / "train.yaml")
    calls = _rankings(caplog)
    # 8 classes: 2 val classes (12 images, all-vs-all) and 2 test classes (12 images).
    val_and_test = calls.pop((12, 12))
    assert val_and_test == 2 + 1  # one per validation epoch, one for the test split
    assert not calls, f"other rankings: {dict(calls)}"
    assert (tmp_path / "run" / "report.html").is_file()
    assert (tmp_path / "run" / "test" / "ranking.npz").is_file()
