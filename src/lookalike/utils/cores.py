"""A core budget: DataLoader workers and torch's intra-op threads share the cores.

Left to their defaults, torch runs one intra-op thread per core in the main process and each
DataLoader worker decodes on a core of its own, so ``W`` workers on ``C`` cores ask for ``C + W``
busy threads and the machine thrashes (2 workers on 2 cores embedded at 12 images/s where 0
workers reached 28.7). :func:`plan_cores` splits the cores that this process may really use
(its CPU affinity, capped by a cgroup CPU quota) so that ``workers + threads <= cores`` on the
CPU; on an accelerator the model does not need the host cores, so the workers get them.
:func:`limit_worker_threads` is the ``worker_init_fn`` that keeps each worker to one thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"
"""The ``workers`` value that lets :func:`plan_cores` choose."""

CPU_IMAGES_PER_WORKER = 8
"""On the CPU, ``auto`` gives one decoding worker per this many cores. Decoding and resizing a
photo (~5 ms on one thread) costs a small fraction of a CNN's forward pass on one thread
(~70 ms for EfficientNet-Lite0), so most cores belong to the model's intra-op threads."""

MAX_AUTO_WORKERS = 16
"""``auto`` never starts more workers than this (start-up cost and memory grow with each)."""

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


@dataclass(frozen=True)
class CorePlan:
    """How the usable cores are split.

    Attributes:
        cores: Cores this process may use (:func:`available_cores`).
        workers: DataLoader worker processes (0: decode in the main process).
        threads: torch intra-op threads of the main process.
    """

    cores: int
    workers: int
    threads: int


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a
    container limited to 2.5 CPUs gets 3), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def cgroup_cpu_quota(
    v2_file: Path = _CGROUP_V2, v1_files: tuple[Path, Path] = _CGROUP_V1
) -> float | None:
    """CPUs allowed by the cgroup's quota (``quota / period``), ``None`` when unlimited or
    unknown. Reads cgroup v2's ``cpu.max`` (``"200000 100000"`` or ``"max 100000"``), else v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: unlimited)."""
    try:
        if v2_file.is_file():
            quota, period = v2_file.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if v1_files[0].is_file() and v1_files[1].is_file():
            quota_us = int(v1_files[0].read_text())
            period_us = int(v1_files[1].read_text())
            return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def parse_workers(value: int | str, name: str = "num_workers") -> int | str:
    """``"auto"`` or a worker count ``>= 0`` (an integer, or its text from a CLI or YAML).

    Raises:
        ValueError: One line naming the setting (``name``) and the value given.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be 'auto' or an integer >= 0, got {value!r}")
    return value


def plan_cores(
    requested_workers: int | str, device: str | torch.device, cores: int | None = None
) -> CorePlan:
    """Split the cores between DataLoader workers and torch's intra-op threads.

    On the CPU the forward pass and the decoding compete for the same cores, so
    ``workers + threads <= cores``: ``"auto"`` gives one worker per
    :data:`CPU_IMAGES_PER_WORKER` cores (none below that) and the rest to threads; a requested
    count is kept (up to ``cores - 1``, leaving the model one core) and the threads shrink to
    fit. On CUDA or MPS the model runs on the device and the main process only feeds it, so
    ``"auto"`` gives the workers every core but one (at most :data:`MAX_AUTO_WORKERS`) and the
    main process keeps what is left (at least one thread).

    Args:
        requested_workers: ``"auto"`` or a worker count ``>= 0``.
        device: Where the model runs ("cpu", "cuda", "cuda:1", "mps", a ``torch.device``).
        cores: Cores to share; :func:`available_cores` when ``None``.

    Returns:
        The :class:`CorePlan`.

    Raises:
        ValueError: ``requested_workers`` is neither ``"auto"`` nor an integer ``>= 0``.
    """
    requested = parse_workers(requested_workers)
    total = available_cores() if cores is None else max(1, int(cores))
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        workers = total // CPU_IMAGES_PER_WORKER if requested == AUTO else min(int(requested), total - 1)
    else:
        workers = min(total - 1, MAX_AUTO_WORKERS) if requested == AUTO else int(requested)
    workers = max(0, workers)
    threads = max(1, total - workers)
    return CorePlan(cores=total, workers=workers, threads=threads)


def limit_worker_threads(worker_id: int) -> None:
    """``worker_init_fn`` of a DataLoader: a worker decodes on one thread (its core's share)."""
    del worker_id
    torch.set_num_threads(1)


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch runs ``threads`` intra-op threads inside the block; the previous count after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
