"""EmbeddingSet files: a bit-exact round trip of awkward values, and tampering refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.store import EMBEDDINGS_FILE, INFO_FILE, RECORDS_FILE, EmbeddingSet
from lookalike.utils.folders import ArtefactError


def _awkward() -> EmbeddingSet:
    embeddings = np.array(
        [[-0.0, 1e-45, 3.4028235e38], [np.float32(1) / 3, -1.0, 7.0], [0.5, 0.25, -2.5],
         [1e-38, -1e-40, 123456.789]],
        dtype=np.float32,
    )
    return EmbeddingSet(
        embeddings,
        ids=["007", "1.0", "naïve/ümlaut.jpg", "None"],
        paths=["/d/007.jpg", "/d/1.0.jpg", "/d/naïve/ümlaut.jpg", "/d/None.jpg"],
        labels=["NaN", "", None, "0"],
        info={"fingerprint": "f" * 16, "nested": {"tta": ["flip"], "amp": None}},
    )


def test_round_trip_is_bit_exact_and_keeps_strings_as_strings(tmp_path: Path) -> None:
    original = _awkward()
    loaded = EmbeddingSet.load(original.save(tmp_path / "emb"))
    assert loaded.embeddings.view(np.uint32).tolist() == original.embeddings.view(np.uint32).tolist()
    assert loaded.ids == original.ids
    assert loaded.paths == original.paths
    assert loaded.labels == ["NaN", "", None, "0"]
    assert loaded.info["nested"] == original.info["nested"] and loaded.fingerprint == "f" * 16


def test_unlabelled_set_round_trips(tmp_path: Path) -> None:
    unlabelled = EmbeddingSet(np.ones((2, 4), np.float32), ["a", "b"], ["/a", "/b"], [None, None])
    loaded = EmbeddingSet.load(unlabelled.save(tmp_path / "emb"))
    assert loaded.labels == [None, None] and not loaded.is_labelled


@pytest.mark.parametrize("name", [EMBEDDINGS_FILE, RECORDS_FILE, INFO_FILE])
def test_a_file_changed_behind_the_manifest_is_refused_in_one_line(
    tmp_path: Path, name: str
) -> None:
    folder = _awkward().save(tmp_path / "emb")
    data = bytearray((folder / name).read_bytes())
    data[-2] ^= 0x01  # one bit, size unchanged
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ArtefactError) as caught:
        EmbeddingSet.load(folder)
    message = str(caught.value)
    assert "\n" not in message and name in message
