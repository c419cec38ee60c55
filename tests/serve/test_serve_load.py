"""A small version of ``benchmarks/serve_load.py``: a few clients for a couple of seconds against
a real uvicorn on 127.0.0.1, with micro-batching on and off; no request may fail."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from serve_helpers import REPO, noise_png, serve_in_thread

from lookalike.serve import ServeSettings, create_app


def load_benchmark() -> ModuleType:
    path = REPO / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch_max", [8, 1])
def test_a_short_load_has_no_errors(tiny_clip, clip_index: Path, batch_max: int) -> None:
    benchmark = load_benchmark()
    images = [(f"{seed}.png", noise_png(seed)) for seed in range(10)]
    settings = ServeSettings(batch_max=batch_max, batch_wait_ms=5, token="", device="cpu")
    with serve_in_thread(create_app(clip_index, model=tiny_clip, settings=settings)) as url:
        report = asyncio.run(benchmark.run_load(url, images, clients=4, seconds=2.0))
        total, count = benchmark.batch_totals(httpx.get(f"{url}/metrics").text)
    assert report.errors == []
    assert len(report.latencies) >= 8 and report.requests_per_second > 0
    assert report.percentile(50) <= report.percentile(95) <= report.percentile(99)
    assert total == len(report.latencies)  # every query went through the batcher once
    assert (count == total) if batch_max == 1 else (count <= total)


def test_the_benchmark_reads_caltech_subsets(tmp_path: Path) -> None:
    benchmark = load_benchmark()
    for name in ("BACKGROUND_Google", "b_class", "a_class"):
        (tmp_path / name).mkdir()
        for number in range(3):
            (tmp_path / name / f"image_{number:04d}.jpg").write_bytes(b"")
    chosen = benchmark.caltech_subset(tmp_path, classes=1, per_class=2)
    assert [path.relative_to(tmp_path).as_posix() for path in chosen] == [
        "a_class/image_0000.jpg",
        "a_class/image_0001.jpg",
    ]
