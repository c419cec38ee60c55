"""ShardFiles bookkeeping past 99,999 shards, where names stop sorting in shard order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.shards import Shard, ShardFiles


def test_stale_shards_are_removed_by_number_not_by_sorted_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10,002 reusable one-image shards and a stale shard_100000 from an earlier, larger run:
    # sorted by name, shard_100000 comes right after shard_10000, ahead of shard_10001.
    reusable = 10_002
    files = ShardFiles(tmp_path / "shards", "fp", [], None, [])
    files.shard_dir.mkdir()
    for number in [*range(reusable), 100_000]:
        files.path(number).touch()

    def load(self: ShardFiles, number: int, start: int, ids: list[str]) -> Shard | None:
        if number >= reusable or not self.path(number).is_file():
            return None
        return Shard(start, start + 1, np.zeros((1, 2), np.float32), np.array([start]), [])

    monkeypatch.setattr(ShardFiles, "load", load)
    shards = files.load_finished([f"id{i}" for i in range(reusable + 5)])
    assert len(shards) == reusable
    assert all(files.path(number).is_file() for number in range(reusable))
    assert not files.path(100_000).exists()
