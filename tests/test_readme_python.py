"""The README's Python example runs verbatim, offline, on tiny generated images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block(needle: str) -> str:
    return next(
        code for code in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
        if needle in code
    )


def _write_images(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(len(root.name))
    for name, colour in {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (48, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.jpg")


@pytest.mark.slow
def test_readme_python_example_runs_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_images(tmp_path / "images", per_class=4)
    _write_images(tmp_path / "queries", per_class=1)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(_python_block("from lookalike import"), str(README), "exec"), namespace)

    run, found, ranking = namespace["run"], namespace["found"], namespace["ranking"]
    # Colour classes are trivially separable for ImageNet features: every query finds its class.
    assert run.metrics["recall@1"] == 1.0
    assert ranking.num_queries == 12 and ranking.num_gallery == 12
    assert (tmp_path / "runs" / "eval" / "ranking.npz").is_file()
    assert run.report_path.resolve() == tmp_path / "runs" / "eval" / "report.html"
    assert len(found.result) == 3 and (tmp_path / "runs" / "results.csv").is_file()
    printed = capsys.readouterr().out.split()
    assert float(printed[0]) == run.metrics["recall@1"]
