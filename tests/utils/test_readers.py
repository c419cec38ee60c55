"""Readers of artefact files: whatever the damage, one ArtefactError line naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.utils.folders import ArtefactError
from lookalike.utils.readers import read_json_object, read_matrix, read_records


def _damaged_copies(original: bytes, seed: int) -> list[bytes]:
    """Cut, scribbled-over and zeroed versions of ``original`` (60 of them)."""
    rng = np.random.default_rng(seed)
    copies = []
    for trial in range(60):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif trial % 3 == 1:
            for _ in range(int(rng.integers(1, 5))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        else:
            data = bytearray(len(data))
        copies.append(bytes(data))
    return copies


def _originals(folder: Path) -> dict[str, tuple[bytes, Callable[[Path, str], object]]]:
    frame = pd.DataFrame({"id": [str(i) for i in range(40)], "path": ["p.png"] * 40,
                          "label": ["a", None] * 20})
    frame.to_parquet(folder / "records.parquet", index=False)
    np.save(folder / "embeddings.npy", np.random.default_rng(0).random((40, 8), dtype=np.float32))
    (folder / "info.json").write_text(json.dumps({"count": 40, "dim": 8, "skipped": []}))
    return {
        name: ((folder / name).read_bytes(), reader)
        for name, reader in (("records.parquet", read_records), ("embeddings.npy", read_matrix),
                             ("info.json", read_json_object))
    }


def test_every_damage_is_one_line_naming_the_file_or_a_sound_read(tmp_path: Path) -> None:
    for seed, (name, (original, reader)) in enumerate(_originals(tmp_path).items()):
        for number, data in enumerate(_damaged_copies(original, seed)):
            path = tmp_path / f"{number}-{name}"
            path.write_bytes(data)
            try:
                reader(path, "rerun it")
            except ArtefactError as error:
                assert str(path) in str(error) and "\n" not in str(error)
                assert str(error).endswith("rerun it")


def test_shapes_types_and_columns_are_checked(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(ArtefactError, match=r"float32 array of shape \(3,\), not \(N, D\)"):
        read_matrix(tmp_path / "a.npy", "fix")
    np.save(tmp_path / "b.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtefactError, match="b.npy cannot be read .Object arrays cannot be loaded"):
        read_matrix(tmp_path / "b.npy", "fix")
    pd.DataFrame({"id": ["a"], "path": ["p"]}).to_parquet(tmp_path / "r.parquet")
    with pytest.raises(ArtefactError, match="r.parquet lacks the column.s. label; fix"):
        read_records(tmp_path / "r.parquet", "fix")
    (tmp_path / "i.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ArtefactError, match="i.json cannot be read"):
        read_json_object(tmp_path / "i.json", "fix")
