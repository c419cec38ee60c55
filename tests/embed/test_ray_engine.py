"""The Ray engine against the local path: same shards, same folder, same skipped rows, resume.

One local Ray session (2 CPUs) serves the module; the model is a random-weight timm test net.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli.main import app
from lookalike.data.records import ImageRecord, ImageSet
from lookalike.embed.extract import embed_image_set
from lookalike.embed.ray_cluster import ActorPlan, plan_actors
from lookalike.embed.ray_engine import embed_image_set_ray
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.pipeline.embedding import check_embed_spec

TINY = ModelSpec("timm:test_resnet", pool="gap", weights="none")
BATCH, SHARD = 4, 8  # shards of two batches; 19 images make 3 shards, the last one short
# Shards close by size only: on a loaded machine a minute can pass before the actors answer.
NO_TIME_LIMIT = 24 * 3600.0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """18 random RGB images of assorted sizes and one file that does not decode, at row 5."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    records = []
    for i in range(19):
        path = root / f"img_{i:02d}.png"
        if i == 5:
            path = root / "broken.jpg"
            path.write_bytes(b"\xff\xd8 this is not a jpeg")
        else:
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3)
            Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=f"{i:02d}", path=path, label=f"c{i % 3}"))
    return ImageSet(records, "all")


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    return build_embedder(TINY)


@pytest.fixture(scope="module")
def local(images: ImageSet, embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The local path's folder: the reference."""
    folder = tmp_path_factory.mktemp("local") / "emb"
    embed_image_set(embedder, images, output_dir=folder, batch_size=BATCH, shard_size=SHARD, shard_seconds=NO_TIME_LIMIT,
                    num_workers=0, device="cpu")
    return folder


@pytest.fixture(scope="module")
def ray_cluster():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _same_folders(ray_folder: Path, local_folder: Path) -> None:
    """Every shard, the assembled set, skipped.csv and info.json match the local path's."""
    ray_shards = sorted(p.name for p in (ray_folder / "shards").iterdir())
    assert ray_shards == sorted(p.name for p in (local_folder / "shards").iterdir())
    assert ray_shards == ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    for name in ray_shards:
        with np.load(ray_folder / "shards" / name) as got, np.load(local_folder / "shards" / name) as want:
            for key in ("start", "rows", "ids", "skipped_rows", "skipped_reasons", "fingerprint", "tta"):
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}:{key}")
            np.testing.assert_allclose(got["embeddings"], want["embeddings"], rtol=1e-4, atol=1e-5)
    got, want = EmbeddingSet.load(ray_folder), EmbeddingSet.load(local_folder)  # manifests verified
    assert got.ids == want.ids and got.paths == want.paths and got.labels == want.labels
    assert len(got.ids) == len(set(got.ids)) == 18 and "05" not in got.ids
    np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=1e-4, atol=1e-5)
    assert (ray_folder / "skipped.csv").read_bytes() == (local_folder / "skipped.csv").read_bytes()
    assert got.info == want.info
    assert [row["id"] for row in got.info["skipped"]] == ["05"]


@pytest.mark.slow
def test_ray_run_killed_then_resumed_is_the_local_output(ray_cluster, images, embedder, local, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One test, so that one pytest-xdist worker starts Ray: a run stopped after its first shard,
    resumed by the Ray engine (only the missing shards recomputed) and by the local path."""
    target = tmp_path / "emb"
    seen: list[int] = []

    def kill_after_first_shard(amount: int) -> None:
        seen.append(amount)
        if sum(seen) >= SHARD:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        embed_image_set_ray(embedder, images, output_dir=target, batch_size=BATCH, shard_size=SHARD, shard_seconds=NO_TIME_LIMIT,
                            device="cpu", actors=2, progress=kill_after_first_shard)
    partial = tmp_path / ".emb.partial"
    assert sorted(p.name for p in (partial / "shards").iterdir()) == ["shard_00000.npz"]
    first = os.stat(partial / "shards" / "shard_00000.npz")
    shutil.copytree(partial, tmp_path / ".other.partial")  # the same killed run, for the local path

    done: list[int] = []
    embed_image_set_ray(embedder, images, output_dir=target, batch_size=BATCH, shard_size=SHARD, shard_seconds=NO_TIME_LIMIT,
                        device="cpu", actors=2, progress=done.append)
    assert done[0] == SHARD  # the finished shard, counted once, not recomputed
    assert sum(done[1:]) == len(images) - SHARD  # only the missing rows went to the actors
    kept = os.stat(target / "shards" / "shard_00000.npz")
    assert (kept.st_ino, kept.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    _same_folders(target, local)

    done.clear()
    embed_image_set(embedder, images, output_dir=tmp_path / "other", batch_size=BATCH,
                    shard_size=SHARD, shard_seconds=NO_TIME_LIMIT, num_workers=0, device="cpu", progress=done.append)
    assert done[0] == SHARD  # the local path takes the Ray engine's shard as finished work
    _same_folders(tmp_path / "other", local)


def test_unreachable_address_is_one_clear_line(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"no Ray cluster answers at 127\.0\.0\.1:1 "):
        check_embed_spec(EmbedSpec(engine="ray", address="127.0.0.1:1"))
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        check_embed_spec(EmbedSpec(engine="ray", address="head-node"))
    result = CliRunner().invoke(app, [
        "embed", str(images[0].path.parent), "-o", str(tmp_path / "emb"), "--model", "timm:test_resnet",
        "--weights", "none", "--engine", "ray", "--address", "127.0.0.1:1",
    ])
    assert result.exit_code == 2
    assert "error: no Ray cluster answers at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "emb").exists()


def test_settings_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="unknown embedding engine 'spark'; valid names: local, ray"):
        check_embed_spec(EmbedSpec(engine="spark"))
    with pytest.raises(ValueError, match="is for the ray engine"):
        check_embed_spec(EmbedSpec(address="10.0.0.5:6379"))
    with pytest.raises(ValueError, match="actors must be an integer >= 1, got 0"):
        check_embed_spec(EmbedSpec(engine="ray", actors=0))
    with pytest.raises(ValueError, match="device 'cuda:1' does not fit the ray engine"):
        check_embed_spec(EmbedSpec(engine="ray", device="cuda:1"))


def test_actor_resources() -> None:
    # 2 CPUs, 2 actors: a third of the CPUs each (whole CPUs would starve Ray Data's own tasks)
    assert plan_actors({"CPU": 2.0}, 2) == ActorPlan("cpu", 0.66, 0.0, 1)
    assert plan_actors({"CPU": 32.0, "GPU": 4.0}, 2) == ActorPlan("cuda", 10.66, 1.0, 10)
    assert plan_actors({"CPU": 8.0, "GPU": 2.0}, 4) == ActorPlan("cuda", 1.6, 0.5, 1)
    assert plan_actors({"CPU": 8.0, "GPU": 2.0}, 3, "cpu") == ActorPlan("cpu", 2.0, 0.0, 2)
    with pytest.raises(ValueError, match="has no GPU"):
        plan_actors({"CPU": 8.0}, 2, "cuda")


def test_the_shard_clock_starts_with_the_first_answer_not_the_actors_start_up(
    images: ImageSet,
) -> None:
    """Actors that take longer than ``shard_seconds`` to load their model must not close the
    first shard after one batch; once answers flow, shards still close by time."""
    import time
    from types import SimpleNamespace

    from lookalike.embed.ray_engine import _ShardCloser

    work = SimpleNamespace(image_set=images, shard_size=1000, batch_size=BATCH, shard_seconds=1.0,
                           embedder=SimpleNamespace(embedding_dim=3))  # fmt: skip
    shards: list = []
    closer = _ShardCloser(work, 0, None, shards)  # type: ignore[arg-type]

    def answer(start: int, stop: int) -> dict[str, np.ndarray]:
        rows = np.arange(start, stop)
        return {"row": rows, "embedded": np.ones(len(rows), bool),
                "embedding": np.ones((len(rows), 3), np.float32),
                "reason": np.full(len(rows), "", dtype=object)}  # fmt: skip

    time.sleep(1.2)  # the actors start up
    closer.add(answer(0, 4))
    closer.add(answer(4, 8))
    assert shards == []  # one shard still open: the start-up did not count
    time.sleep(1.2)  # answers flow slowly now: the open shard closes by time
    closer.add(answer(8, 12))
    assert [(shard.start, shard.stop) for shard in shards] == [(0, 12)]
    closer.add(answer(12, 19))
    closer.finish()
    assert [(shard.start, shard.stop) for shard in shards] == [(0, 12), (12, 19)]
