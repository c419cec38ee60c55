"""kill -9 at random instants of ``embed``, ``index`` and an index rebuild; the rerun must finish
with the uninterrupted result, and no kill may leave a mixed folder.

Every run is a real ``lookalike`` command in its own process, forked from a server that imported
the CLI once (so a run starts in milliseconds, not the ten seconds of importing torch). The test
kills a run with SIGKILL while it works, at instants drawn from a seeded generator and tied to its
progress (before the first shard, after some shards, while the index folder is being written),
then looks at what the kill left and starts the next run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from artefact_kit import CPU, invoke, save_tiny_model, write_images

from lookalike.embed.store import EmbeddingSet
from lookalike.index import load_index
from lookalike.utils.folders import partial_path, verify_folder

pytestmark = pytest.mark.slow

SERVER = r"""
import json, os, sys
from lookalike.cli.main import app

for line in sys.stdin:
    request = json.loads(line)
    if "run" in request:
        pid = os.fork()
        if pid == 0:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            code = 1
            try:
                app(request["run"], prog_name="lookalike")
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            finally:
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    else:
        _, status = os.waitpid(request["wait"], 0)
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"signal": signalled, "code": code}), flush=True)
"""


class ForkServer:
    """Runs ``lookalike ARGS`` in forked processes of one long-lived Python process."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )

    def _ask(self, request: dict[str, object]) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, *args: object) -> int:
        """Start a run; its process id."""
        return int(self._ask({"run": [str(a) for a in args]})["pid"])  # type: ignore[call-overload]

    def wait(self, pid: int) -> tuple[int | None, int | None]:
        """``(signal, exit code)`` of a finished (or killed) run."""
        answer = self._ask({"wait": pid})
        return answer["signal"], answer["code"]  # type: ignore[return-value]

    def run(self, *args: object) -> None:
        """Run to the end; it must succeed."""
        assert self.wait(self.start(*args)) == (None, 0), args

    def kill_when(self, args: list[object], ready: Callable[[], bool], delay: float) -> bool:
        """Start a run, SIGKILL it ``delay`` seconds after ``ready()`` first holds; True when the
        kill landed (the run had not finished yet)."""
        pid = self.start(*args)
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already reaped: cannot happen before wait(), kept for safety
            pass
        killed, code = self.wait(pid)
        assert killed == signal.SIGKILL or code == 0, (args, killed, code)
        return killed == signal.SIGKILL

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    forks = ForkServer()
    yield forks
    forks.close()


def _shards(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("shard_*.npz"))


def test_embed_killed_at_random_instants_resumes_to_the_uninterrupted_result(
    server: ForkServer, tmp_path: Path
) -> None:
    images = write_images(tmp_path / "images", classes=6, per_class=40)
    model = save_tiny_model(tmp_path / "model")
    settings = ["--checkpoint", model, *CPU, "--batch-size", "4", "--shard-size", "8"]
    server.run("embed", images, "-o", tmp_path / "reference", *settings)
    reference = EmbeddingSet.load(tmp_path / "reference")
    assert len(reference) == 240 and len(_shards(tmp_path / "reference")) == 30

    out = tmp_path / "out"
    build = partial_path(out)
    rng = np.random.default_rng(14)
    kills, done_before = 0, 0
    # At start-up, then each time after a random number of further finished shards.
    plans = [(lambda: True, float(rng.uniform(0.0, 0.3)))]
    for _ in range(3):
        extra = int(rng.integers(1, 5))
        plans.append((lambda e=extra: len(_shards(build)) >= done_before + e,
                      float(rng.uniform(0.0, 0.05))))
    for ready, delay in plans:
        done_before = len(_shards(build)) if build.exists() else 0
        kills += server.kill_when(["embed", images, "-o", out, *settings], ready, delay)
        # What a kill leaves: no output folder yet, and finished shards that are whole.
        assert not out.exists()
        if build.exists():
            for shard in _shards(build):
                with np.load(shard, allow_pickle=False) as data:
                    assert data["embeddings"].shape[1] == reference.dim
    assert kills >= 3
    finished = {path.name: path.stat().st_ino for path in _shards(build)}
    print(f"embed: {kills} kills landed, {len(finished)} of 30 shards kept for the rerun")
    assert len(finished) >= 3  # work survived the kills

    server.run("embed", images, "-o", out, *settings)
    verify_folder(out, "embeddings")
    resumed = EmbeddingSet.load(out)
    np.testing.assert_array_equal(resumed.embeddings, reference.embeddings)
    assert resumed.ids == reference.ids and resumed.labels == reference.labels
    assert resumed.info["counts"] == {"images": 240, "embedded": 240, "skipped": 0}
    # The finished shards were reused, not recomputed: the same files (inodes) are in place.
    assert {name: (out / "shards" / name).stat().st_ino for name in finished} == finished
    assert not build.exists()


def _gallery(folder: Path, seed: int, rows: int) -> Path:
    vectors = np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
    ids = [f"s{seed}_{i}" for i in range(rows)]
    EmbeddingSet(vectors, ids, [f"{i}.png" for i in ids], [str(i % 50) for i in range(rows)],
                 {"fingerprint": "kill-test"}).save(folder)
    return folder


def _top5(folder: Path, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The ids of each query's top 5, and their scores, from the index at ``folder``."""
    index, metadata = load_index(folder)
    result = index.search(queries, 5)
    return [metadata.ids[i] for i in result.indices.ravel()], result.scores


@pytest.mark.parametrize("rebuild", [False, True], ids=["build", "rebuild"])
def test_index_killed_at_random_instants_is_old_or_new_and_the_rerun_is_whole(
    server: ForkServer, tmp_path: Path, rebuild: bool
) -> None:
    old, new = _gallery(tmp_path / "old", 1, 20_000), _gallery(tmp_path / "new", 2, 30_000)
    queries = np.random.default_rng(3).standard_normal((20, 64)).astype(np.float32)
    for gallery in (old, new):
        assert invoke("index", gallery, "-o", tmp_path / f"{gallery.name}_idx").exit_code == 0
    expected = {name: _top5(tmp_path / f"{name}_idx", queries) for name in ("old", "new")}
    assert expected["old"][0] != expected["new"][0]

    idx = tmp_path / "idx"
    rng = np.random.default_rng(7 + rebuild)
    building = partial_path(idx)
    # At start-up, then at random instants after each step of writing the new folder: its
    # partial folder appears, the index file, the records, index.json, the manifest.
    steps = [building, *(building / name for name in
                         ("index.faiss", "records.parquet", "index.json", "manifest.json"))]
    plans = [(lambda: True, float(rng.uniform(0.0, 0.2)))]
    plans += [(step.exists, float(rng.uniform(0.0, 0.02))) for step in steps]
    kills, observed = 0, {"old": 0, "new": 0, "none": 0}
    for ready, delay in plans:
        if rebuild:
            assert invoke("index", old, "-o", idx).exit_code == 0
        elif idx.exists():
            shutil.rmtree(idx)
        kills += server.kill_when(["index", new, "-o", idx], ready, delay)
        if not idx.exists():
            assert not rebuild, "a rebuild lost the old index"
            observed["none"] += 1
        else:
            verify_folder(idx, "index")  # a mixed folder fails here, or in the comparison below
            found = _top5(idx, queries)
            matches = [name for name, want in expected.items() if found[0] == want[0]]
            assert len(matches) == 1, "the folder holds neither the old nor the new index"
            np.testing.assert_array_equal(found[1], expected[matches[0]][1])
            observed[matches[0]] += 1
        # The rerun finishes with the uninterrupted result.
        assert invoke("index", new, "-o", idx).exit_code == 0
        found = _top5(idx, queries)
        assert found[0] == expected["new"][0]
        np.testing.assert_array_equal(found[1], expected["new"][1])
        assert not building.exists()
    assert kills >= 3  # the last steps can finish before the kill lands
    print(f"index {'rebuild' if rebuild else 'build'}: {kills} of {len(plans)} kills landed; "
          f"folder seen {observed}")
