"""The Ray side of distributed extraction: importing Ray, joining or starting a cluster, and
sharing its resources among model actors (see :mod:`lookalike.embed.ray_engine`).

Each actor gets a GPU where the cluster has them (a fraction of one when there are more actors
than GPUs), else ``CPUs / (actors + 1)`` CPUs, fractional on small machines: whole CPUs would
leave nothing for Ray Data's own tasks on 2 cores and stall the pipeline. An address is checked
to answer before Ray is asked to join it (Ray itself retries for a minute or more).

Ray is imported only when a function here runs; it comes with ``pip install 'lookalike[ray]'``.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lookalike.utils.cores import available_cores

RAY_DEVICES = ("auto", "cpu", "cuda")
"""Devices the Ray engine takes: each actor is given its own GPU, so no ``cuda:N``."""

_PROBE_SECONDS = 5.0


def import_ray() -> Any:
    """The ``ray`` module with Ray Data; a one-line ValueError saying how to install it."""
    try:
        import ray
        import ray.data  # Ray without the [data] extra lacks it
    except ImportError as error:
        raise ValueError(
            f"the ray engine needs Ray Data ({error}); pip install 'lookalike[ray]'"
        ) from error
    return ray


@dataclass(frozen=True)
class ActorPlan:
    """Resources of each model actor.

    Attributes:
        device: "cuda" or "cpu", where each actor runs the model.
        num_cpus: CPUs reserved per actor (fractional on small machines).
        num_gpus: GPUs per actor (1, a fraction when actors outnumber GPUs, or 0).
        threads: torch intra-op threads of each actor (its whole CPUs, at least one).
    """

    device: str
    num_cpus: float
    num_gpus: float
    threads: int


def plan_actors(resources: dict[str, float], actors: int, device: str = "auto") -> ActorPlan:
    """Share a cluster's ``resources`` (``ray.cluster_resources()``) among ``actors``.

    A GPU per actor where the cluster has GPUs (and ``device`` is not "cpu"), fractions of one
    when actors outnumber them; ``CPUs / (actors + 1)`` CPUs per actor, in hundredths, so that
    Ray Data keeps CPU for its own tasks.

    Raises:
        ValueError: ``actors`` below 1, ``device`` not in :data:`RAY_DEVICES`, or "cuda" on a
            cluster without GPUs.
    """
    check_ray_settings(device, actors)
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    if device == "cuda" and gpus <= 0:
        raise ValueError("device 'cuda' was asked for, but the Ray cluster has no GPU; use auto or cpu")
    use_gpus = device != "cpu" and gpus > 0
    num_cpus = max(0.01, math.floor(100 * cpus / (actors + 1)) / 100)
    return ActorPlan(
        device="cuda" if use_gpus else "cpu",
        num_cpus=num_cpus,
        num_gpus=min(1.0, gpus / actors) if use_gpus else 0.0,
        threads=max(1, int(num_cpus)),
    )


def check_ray_settings(device: str, actors: int, address: str | None = None) -> None:
    """Refuse settings the Ray engine cannot run, before anything starts: ``address`` must be
    well formed and answer (a TCP connection within seconds).

    Raises:
        ValueError: One line naming the setting and the value given.
    """
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be an integer >= 1, got {actors!r}")
    if device not in RAY_DEVICES:
        raise ValueError(
            f"device {device!r} does not fit the ray engine (each actor is given its own GPU); "
            f"use one of {', '.join(RAY_DEVICES)}"
        )
    if address is not None:
        _probe(address)


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """The Ray session to run in: the caller's when one is open, else one joined or started
    here and shut down on leaving.

    Args:
        address: A cluster to join ("HOST:PORT", "ray://HOST:PORT", "auto"), checked to answer
            first; ``None``: ``RAY_ADDRESS`` when set, else a local Ray on this machine's cores.

    Raises:
        ValueError: Ray missing, a malformed or unreachable address, or an address given while
            this process already has a Ray session.
    """
    if address is not None:
        _probe(address)
    ray = import_ray()
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                f"Ray is already initialised in this process; leave the address ({address}) "
                "unset to use that session"
            )
        yield ray
        return
    joining = address or os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"include_dashboard": False}
    if joining:
        options["address"] = joining
    else:
        options.update(num_cpus=available_cores(), log_to_driver=False)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"cannot start or join Ray at {joining or 'this machine'} ({first_line}); start a "
            "cluster with `ray start --head` or fix the address"
        ) from error
    try:
        yield ray
    finally:
        ray.shutdown()


def _split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of an address, ``None`` for "auto"; a ValueError for anything else."""
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto "
            "(e.g. 10.0.0.5:6379)"
        )
    return host.strip("[]"), int(port)


def _probe(address: str) -> None:
    """Refuse, in seconds and in one line, an address where nothing answers (Ray itself would
    retry for a minute or more before failing)."""
    where = _split_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=_PROBE_SECONDS):
            pass
    except OSError as error:
        raise ValueError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` there, or fix --address"
        ) from error
