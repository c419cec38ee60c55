"""The stored rows of an index, given back: for search by item id and for compaction.

The :class:`~lookalike.index.base.Index` protocol adds and searches rows but has no way to read
them back or to remove one. A server needs both: a catalogue item searched by its id is its own
stored row, and compaction rebuilds an index without its deleted rows. This module reads rows
from the entries that keep them (exact_torch's tensor; FAISS flat, HNSW and IVF storage; IVF-PQ
gives its quantised reconstruction) and makes an empty copy of an index to hold chosen rows, keeping
what the index learned in training (IVF centroids, PQ codebooks).

A natural home for these two operations is the protocol itself (``Index.reconstruct`` and
``Index.empty_copy``); until it has them they live here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lookalike.index.base import Index, create_index
from lookalike.index.exact import ExactTorchIndex
from lookalike.index.faiss_index import FaissIndex
from lookalike.index.milvus_index import MilvusIndex


def enable_row_access(index: Index) -> None:
    """Prepare ``index`` so that :func:`stored_rows` can read it (IVF: a direct map)."""
    if isinstance(index, FaissIndex) and index.device == "cpu":
        import faiss

        ivf = faiss.try_extract_index_ivf(index.faiss_index)
        if ivf is not None:
            ivf.make_direct_map()


def stored_rows(index: Index, rows: np.ndarray | None = None) -> np.ndarray:
    """``(R, D)`` float32 stored vectors of ``rows`` (all rows when None), as the index keeps
    them: L2-normalised for cosine, quantised for IVF-PQ.

    Raises:
        ValueError: The index kind cannot give its rows back.
    """
    selected = np.arange(index.ntotal) if rows is None else np.asarray(rows, dtype=np.int64)
    if isinstance(index, ExactTorchIndex):
        return index.vectors[selected].cpu().numpy().astype(np.float32, copy=False)
    if isinstance(index, MilvusIndex):
        return index.reconstruct(selected)
    if isinstance(index, FaissIndex) and index.device == "cpu":
        if selected.size == 0:
            return np.zeros((0, index.dim), np.float32)
        faiss_index = index.faiss_index
        if rows is None:
            return np.asarray(faiss_index.reconstruct_n(0, index.ntotal), dtype=np.float32)
        return np.stack([faiss_index.reconstruct(int(row)) for row in selected]).astype(
            np.float32, copy=False
        )
    raise ValueError(
        f"a {index.kind} index on {index.device} cannot give its stored rows back; serve an "
        "exact_torch, flat, hnsw, ivf_flat, ivf_pq or milvus index on the CPU"
    )


def empty_copy(index: Index) -> Index:
    """A new, empty index of ``index``'s kind and parameters, keeping what it learned in
    training (IVF centroids, PQ codebooks), ready for :meth:`~Index.add`; a milvus index on a
    server gets a new collection."""
    if isinstance(index, MilvusIndex):
        return index.empty_copy()
    copy = create_index(index.kind, index.dim, index.metric, device=index.device, **index.params)
    if not copy.is_trained and isinstance(index, FaissIndex) and isinstance(copy, FaissIndex):
        _copy_training(index, copy)
    enable_row_access(copy)
    return copy


def _copy_training(source: FaissIndex, target: FaissIndex) -> None:
    """Give ``target`` the trained, emptied structure of ``source`` (through its state file)."""
    import faiss

    trained = faiss.clone_index(source.faiss_index)
    trained.reset()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / target.state_file
        faiss.write_index(trained, str(path))
        target.read_state(path)
