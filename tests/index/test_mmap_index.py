"""IVF indexes saved with ``mmap=true`` load with their inverted lists memory-mapped from the
index file (FAISS ``OnDiskInvertedLists``) and answer exactly as the index built in memory."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from lookalike.index import create_index, load_index, save_index

PARAMS = {
    "ivf_pq": {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 4},
    "ivf_flat": {"nlist": 16, "nprobe": 4},
}


def inverted_lists(index: object) -> object:
    ivf = faiss.extract_index_ivf(index.faiss_index)  # type: ignore[attr-defined]
    return faiss.downcast_InvertedLists(ivf.invlists)


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_memory_mapped_index_answers_as_the_one_built_in_memory(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(3000, 32)).astype(np.float32)
    queries = rng.normal(size=(50, 32)).astype(np.float32)
    built = create_index(kind, 32, "cosine", mmap=True, **PARAMS[kind])
    built.train(gallery[:1000])
    built.add(gallery)
    assert built.params == {**PARAMS[kind], "mmap": True}
    ids = [f"g{i}" for i in range(len(gallery))]
    save_index(built, tmp_path / "mapped", ids)

    loaded, metadata = load_index(tmp_path / "mapped")
    assert metadata.params["mmap"] is True and loaded.params == built.params
    assert isinstance(inverted_lists(loaded), faiss.OnDiskInvertedLists)
    assert isinstance(inverted_lists(built), faiss.ArrayInvertedLists)
    expected, found = built.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(found.indices, expected.indices)
    np.testing.assert_array_equal(found.scores, expected.scores)

    # the same file read into memory (the default) answers the same
    plain = create_index(kind, 32, "cosine", **PARAMS[kind])
    plain.read_state(tmp_path / "mapped" / plain.state_file)
    assert isinstance(inverted_lists(plain), faiss.ArrayInvertedLists)
    np.testing.assert_array_equal(plain.search(queries, 10).indices, expected.indices)

    with pytest.raises(ValueError, match="memory-mapped .*read-only"):
        loaded.add(gallery[:5])
    with pytest.raises(ValueError, match="memory-mapped"):
        save_index(loaded, tmp_path / "again", ids)
    assert not (tmp_path / "again").exists()
    # its rows read back (a served catalogue searching by item), but it cannot be copied to
    # change: one line, not FAISS's "clone not supported for OnDiskInvertedLists"
    np.testing.assert_array_equal(loaded.reconstruct([0, 2999]), built.reconstruct([0, 2999]))
    with pytest.raises(ValueError, match="memory-mapped .*read-only; build the index without"):
        loaded.empty_copy()


def test_mmap_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match="mmap must be true or false, got 'yes'"):
        create_index("ivf_pq", 32, "cosine", mmap="yes", **PARAMS["ivf_pq"])
    assert "mmap" not in create_index("ivf_pq", 32, "cosine", **PARAMS["ivf_pq"]).params
