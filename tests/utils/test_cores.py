"""The core budget: workers plus intra-op threads never exceed the cores on the CPU; the
cgroup quota caps the cores; workers run one thread; extraction applies the plan."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lookalike.data.sources import load_source
from lookalike.embed import extract
from lookalike.embed.extract import embed_image_set
from lookalike.models.preprocessing import Preprocessing
from lookalike.utils import cores as cores_module
from lookalike.utils.cores import (
    CPU_IMAGES_PER_WORKER,
    MAX_AUTO_WORKERS,
    CorePlan,
    cgroup_cpu_quota,
    intra_op_threads,
    limit_worker_threads,
    parse_workers,
    plan_cores,
)


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 7, 8, 16, 31, 64, 192])
@pytest.mark.parametrize("requested", ["auto", 0, 1, 2, 4, 8, 100])
def test_on_the_cpu_workers_and_threads_fit_the_cores(cores: int, requested: int | str) -> None:
    plan = plan_cores(requested, "cpu", cores=cores)
    assert plan.cores == cores
    assert plan.threads >= 1 and plan.workers >= 0
    assert plan.workers + plan.threads <= cores
    if requested == "auto":
        assert plan.workers == cores // CPU_IMAGES_PER_WORKER
        assert plan.threads == cores - plan.workers  # no core left idle
    else:
        assert plan.workers == min(requested, cores - 1)  # the model keeps a core


def test_auto_on_two_cores_decodes_in_the_main_process_with_both_threads() -> None:
    # the measurement behind the budget: on 2 cores 0 workers + 2 threads beat 2 workers
    assert plan_cores("auto", "cpu", cores=2) == CorePlan(cores=2, workers=0, threads=2)


@pytest.mark.parametrize("cores", [1, 2, 8, 64])
def test_on_cuda_the_workers_get_the_cores(cores: int) -> None:
    plan = plan_cores("auto", torch.device("cuda"), cores=cores)
    assert plan.workers == min(cores - 1, MAX_AUTO_WORKERS)
    assert plan.threads == max(1, cores - plan.workers)
    assert plan_cores(6, "cuda:1", cores=4) == CorePlan(cores=4, workers=6, threads=1)


@pytest.mark.parametrize("value", [-1, 1.5, True, "many", "", None])
def test_bad_worker_counts_name_the_setting(value: object) -> None:
    with pytest.raises(ValueError, match=r"num_workers must be 'auto' or an integer >= 0"):
        plan_cores(value, "cpu", cores=4)  # type: ignore[arg-type]


def test_worker_counts_parse_from_text() -> None:
    assert parse_workers(" AUTO ") == "auto"
    assert parse_workers("3") == 3
    assert parse_workers(0) == 0


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "cpu.max"
    missing = (tmp_path / "no_quota", tmp_path / "no_period")
    v2.write_text("250000 100000\n")
    assert cgroup_cpu_quota(v2, missing) == pytest.approx(2.5)
    v2.write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, missing) is None
    quota, period = tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    quota.write_text("150000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path / "absent", (quota, period)) == pytest.approx(1.5)
    quota.write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path / "absent", (quota, period)) is None
    assert cgroup_cpu_quota(tmp_path / "absent", missing) is None


def test_available_cores_are_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores_module.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(cores_module, "cgroup_cpu_quota", lambda: 2.5)
    assert cores_module.available_cores() == 3
    monkeypatch.setattr(cores_module, "cgroup_cpu_quota", lambda: None)
    assert cores_module.available_cores() == 16
    assert plan_cores("auto", "cpu") == CorePlan(cores=16, workers=2, threads=14)


class _ThreadCount(Dataset[int]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


def test_workers_run_one_thread_and_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    loader = DataLoader(_ThreadCount(), num_workers=1, worker_init_fn=limit_worker_threads)
    assert [int(count) for count in loader] == [1, 1]


class _ThreadRecorder(nn.Module):
    """A minimal embedder (mean colour) that records torch's thread count at each forward."""

    embedding_dim = 3
    preprocessing = Preprocessing(input_size=16, crop_pct=1.0)
    config: ClassVar[dict[str, str]] = {"name": "thread_recorder"}

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def fingerprint(self) -> str:
        return "thread_recorder"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.threads.append(torch.get_num_threads())
        return images.mean(dim=(2, 3))


def test_extraction_runs_the_planned_threads_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        (tmp_path / "img" / "a").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / "a" / f"{i}.png")
    images = load_source(tmp_path / "img")
    asked: list[tuple[object, object]] = []

    def fake_plan(requested: object, device: object) -> CorePlan:
        asked.append((requested, device))
        return CorePlan(cores=3, workers=1, threads=2)

    monkeypatch.setattr(extract, "plan_cores", fake_plan)
    embedder = _ThreadRecorder()
    before = torch.get_num_threads()
    result = embed_image_set(embedder, images, batch_size=2, device="cpu", channels_last=False)
    assert asked == [("auto", torch.device("cpu"))]
    assert embedder.threads == [2, 2] and torch.get_num_threads() == before
    assert len(result) == 4
