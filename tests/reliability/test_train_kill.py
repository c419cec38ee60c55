"""``lookalike train`` killed with SIGKILL at random instants after its first checkpoint, then run
again with the same command: it resumes and exports exactly the weights of an uninterrupted run.

The instants are drawn afresh each run and printed (``pytest -s``); a kill that lands after the
run has finished counts as no kill point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.config import save_config
from lookalike.models import load_embedder
from tiny_training import tiny_config, write_images

KILLS = 2
# One thread and no workers: the uninterrupted and the resumed runs compute bit for bit alike.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli.main", "train", "-c", str(config),
            "--no-test", "--no-report"]


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the command, its output going to ``log`` (a pipe left unread could fill and stall)."""
    with open(log, "ab") as output:
        return subprocess.Popen(_command(config), env=ENV, stdout=output, stderr=output)


def _run(config: Path, last: Path, log: Path) -> float:
    """Run to the end; returns the seconds from its first checkpoint to its end."""
    process = _start(config, log)
    _wait_for_new_checkpoint(process, last, None)
    first_checkpoint = time.monotonic()
    process.wait(timeout=900)
    output = log.read_text(errors="replace")
    assert process.returncode == 0 and "Traceback" not in output, output[-3000:]
    return time.monotonic() - first_checkpoint


def _wait_for_new_checkpoint(
    process: subprocess.Popen[bytes], last: Path, previous: float | None, timeout: float = 300
) -> bool:
    """Wait until ``last`` is written (again); False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if last.is_file() and last.stat().st_mtime_ns != previous:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint within {timeout} s")


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_embedder(model_dir).state_dict()


@pytest.mark.slow
def test_train_killed_at_random_instants_resumes_to_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    images = write_images(tmp_path / "img")
    options = ("data.augment=strong", "optim.warmup_steps=2", "trainer.max_epochs=4")
    for name in ("straight", "killed"):
        save_config(tiny_config(images, tmp_path / name, *options), tmp_path / f"{name}.yaml")

    straight_last = tmp_path / "straight" / "checkpoints" / "last.ckpt"
    seconds = _run(tmp_path / "straight.yaml", straight_last, tmp_path / "straight.log")
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    log = tmp_path / "killed.log"
    rng = np.random.default_rng()
    kill_points: list[float] = []
    for _ in range(KILLS):
        previous = last.stat().st_mtime_ns if last.is_file() else None
        process = _start(tmp_path / "killed.yaml", log)
        if _wait_for_new_checkpoint(process, last, previous):
            instant = float(rng.uniform(0.0, 0.35 * seconds))  # leaves work for the next kill
            time.sleep(instant)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kill_points.append(round(instant, 2))
        process.wait(timeout=900)
        assert "Traceback" not in log.read_text(errors="replace")
    _run(tmp_path / "killed.yaml", last, log)

    print(f"\ntrain: kill points {kill_points} s after a checkpoint (uninterrupted run: "
          f"{seconds:.1f} s from its first checkpoint to its end)")
    assert kill_points, "every kill landed after the run had finished"
    resumed = _weights(tmp_path / "killed" / "model")
    reference = _weights(tmp_path / "straight" / "model")
    assert resumed.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(resumed[k], reference[k])]
    assert different == []
    leftovers = sorted(p.name for p in (last.parent).iterdir())
    assert leftovers == ["best.ckpt", "last.ckpt"], leftovers
    assert (tmp_path / "killed" / "run.json").is_file()
