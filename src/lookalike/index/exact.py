"""Exact top-k search in plain torch: the reference every approximate index is held to.

Scores are computed one ``(chunk_q, chunk_g)`` block at a time and merged into a running top-k
with :func:`torch.topk`, so memory stays bounded by the chunk sizes however large the query and
gallery sets are (no ``Q x N`` matrix is ever built). The same code runs on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lookalike.index.base import INDEXES, Index
from lookalike.index.metrics import Metric, get_metric
from lookalike.index.result import SearchResult
from lookalike.utils.folders import ArtefactError
from lookalike.utils.readers import read_matrix
from lookalike.utils.vectors import check_vectors

DEFAULT_QUERY_CHUNK = 1024
DEFAULT_GALLERY_CHUNK = 16384


def exact_search(
    queries: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    k: int,
    metric: Metric | str = "cosine",
    chunk_size: int = DEFAULT_QUERY_CHUNK,
    gallery_chunk_size: int = DEFAULT_GALLERY_CHUNK,
    exclude: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> SearchResult:
    """Exact ``k`` nearest gallery rows of each query, best first.

    Args:
        queries: ``(Q, D)`` query embeddings.
        gallery: ``(N, D)`` gallery embeddings.
        k: Neighbours per query; columns beyond ``N`` (or ``N - 1`` with ``exclude``) are padded
            with index -1 and the metric's worst score.
        metric: "cosine" (rows are L2-normalised first), "ip", "l2" or "l1".
        chunk_size: Queries scored at a time.
        gallery_chunk_size: Gallery rows scored at a time.
        exclude: ``(Q,)`` int gallery row to drop from each query's ranking (-1: drop none), e.g.
            the query's own row when the gallery contains the queries (the SOP protocol of
            Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", 2016).
        device: Where to compute; defaults to the gallery tensor's device, else the CPU.

    Returns:
        :class:`SearchResult` with ``(Q, k)`` scores in the metric's own sense and int64 rows.
    """
    metric = get_metric(metric) if isinstance(metric, str) else metric
    if device is None:
        device = gallery.device if isinstance(gallery, torch.Tensor) else "cpu"
    target = torch.device(device)
    query_rows = _prepare(queries, metric, target, "queries")
    gallery_rows = _prepare(gallery, metric, target, "gallery")
    if query_rows.shape[1] != gallery_rows.shape[1]:
        raise ValueError(
            f"queries have dimension {query_rows.shape[1]} but the gallery has "
            f"{gallery_rows.shape[1]}; embed both with the same model"
        )
    if gallery_rows.shape[0] == 0:
        raise ValueError("cannot search an empty gallery")
    excluded = None
    if exclude is not None:
        excluded = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if excluded.shape[0] != query_rows.shape[0]:
            raise ValueError(
                f"exclude has {excluded.shape[0]} entries but there are "
                f"{query_rows.shape[0]} queries"
            )
        if (excluded >= gallery_rows.shape[0]).any() or (excluded < -1).any():
            raise ValueError(f"exclude entries must be -1 or rows in [0, {gallery_rows.shape[0]})")
    scores, indices = chunked_topk(
        query_rows, gallery_rows, k, metric, chunk_size, gallery_chunk_size, excluded
    )
    return SearchResult(scores, indices, metric.higher_is_better)


def chunked_topk(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    metric: Metric,
    chunk_size: int = DEFAULT_QUERY_CHUNK,
    gallery_chunk_size: int = DEFAULT_GALLERY_CHUNK,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k over gallery chunks for already prepared tensors on one device.

    Args:
        queries: ``(Q, D)`` float32, normalised already where the metric asks for it.
        gallery: ``(N, D)`` float32 on the same device.
        k: Neighbours per query.
        metric: The metric; only its ``pairwise`` and sense are used here.
        chunk_size: Queries per block.
        gallery_chunk_size: Gallery rows per block.
        exclude: ``(Q,)`` gallery row to drop per query, -1 for none.

    Returns:
        ``(Q, k)`` float32 scores and int64 indices, best first, padded with -1 / worst score.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk_size < 1 or gallery_chunk_size < 1:
        raise ValueError(
            f"chunk sizes must be positive, got chunk_size={chunk_size}, "
            f"gallery_chunk_size={gallery_chunk_size}"
        )
    num_queries, num_gallery = queries.shape[0], gallery.shape[0]
    worst = metric.worst()
    scores = np.full((num_queries, k), worst, dtype=np.float32)
    indices = np.full((num_queries, k), -1, dtype=np.int64)
    kept = min(k, num_gallery)
    device = queries.device
    excluded = None if exclude is None else torch.as_tensor(exclude, device=device)
    for start in range(0, num_queries, chunk_size):
        block = queries[start : start + chunk_size]
        rows = block.shape[0]
        best_scores = torch.full((rows, kept), worst, dtype=torch.float32, device=device)
        best_indices = torch.full((rows, kept), -1, dtype=torch.int64, device=device)
        for g_start in range(0, num_gallery, gallery_chunk_size):
            g_block = gallery[g_start : g_start + gallery_chunk_size]
            block_scores = metric.pairwise(block, g_block)
            block_indices = torch.arange(
                g_start, g_start + g_block.shape[0], device=device
            ).expand(rows, -1)
            if excluded is not None:
                dropped = block_indices == excluded[start : start + rows, None]
                block_scores = block_scores.masked_fill(dropped, worst)
                block_indices = block_indices.masked_fill(dropped, -1)
            candidate_scores = torch.cat([best_scores, block_scores], dim=1)
            candidate_indices = torch.cat([best_indices, block_indices], dim=1)
            best_scores, position = torch.topk(
                candidate_scores, kept, dim=1, largest=metric.higher_is_better, sorted=True
            )
            best_indices = torch.gather(candidate_indices, 1, position)
        scores[start : start + rows, :kept] = best_scores.cpu().numpy()
        indices[start : start + rows, :kept] = best_indices.cpu().numpy()
    return scores, indices


def _prepare(
    vectors: np.ndarray | torch.Tensor, metric: Metric, device: torch.device, name: str
) -> torch.Tensor:
    """``(N, D)`` float32 tensor on ``device``, L2-normalised when the metric asks for it."""
    tensor = torch.as_tensor(vectors).to(device=device, dtype=torch.float32)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    if metric.normalize:
        tensor = torch.nn.functional.normalize(tensor, p=2.0, dim=1, eps=1e-12)
    return tensor.contiguous()


@INDEXES.register("exact_torch")
class ExactTorchIndex(Index):
    """Exact search over rows kept as one torch tensor, on CPU or CUDA.

    Args:
        dim: Embedding width ``D``.
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda[:N]".
        chunk_size: Queries scored at a time.
        gallery_chunk_size: Gallery rows scored at a time.
    """

    kind = "exact_torch"
    exact = True
    state_file = "vectors.npy"

    def __init__(
        self,
        dim: int,
        metric: Metric | str = "cosine",
        device: str = "cpu",
        chunk_size: int = DEFAULT_QUERY_CHUNK,
        gallery_chunk_size: int = DEFAULT_GALLERY_CHUNK,
    ) -> None:
        super().__init__(dim, metric, device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but torch sees no CUDA device; use 'cpu'"
            )
        if chunk_size < 1 or gallery_chunk_size < 1:
            raise ValueError(
                f"chunk sizes must be positive, got chunk_size={chunk_size}, "
                f"gallery_chunk_size={gallery_chunk_size}"
            )
        self.chunk_size = int(chunk_size)
        self.gallery_chunk_size = int(gallery_chunk_size)
        self._vectors = torch.empty((0, self.dim), dtype=torch.float32, device=device)

    @property
    def ntotal(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def params(self) -> dict[str, int]:
        return {"chunk_size": self.chunk_size, "gallery_chunk_size": self.gallery_chunk_size}

    @property
    def vectors(self) -> torch.Tensor:
        """The stored ``(N, D)`` rows (normalised for cosine), on the index's device."""
        return self._vectors

    def _add(self, vectors: np.ndarray) -> None:
        rows = torch.from_numpy(vectors).to(self._vectors.device)
        self._vectors = torch.cat([self._vectors, rows], dim=0)

    def reconstruct(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        selected = torch.from_numpy(self._row_numbers(rows)).to(self._vectors.device)
        return self._vectors[selected].cpu().numpy().astype(np.float32, copy=False)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = torch.from_numpy(queries).to(self._vectors.device)
        return chunked_topk(
            rows, self._vectors, k, self.metric, self.chunk_size, self.gallery_chunk_size
        )

    def write_state(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, self._vectors.cpu().numpy())

    def read_state(self, path: Path) -> None:
        vectors = read_matrix(path, "rebuild the index with `lookalike index`")
        if vectors.shape[1] != self.dim:
            raise ArtefactError(f"{path} holds shape {vectors.shape}, expected (N, {self.dim})")
        check_vectors(vectors, str(path))
        self._vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(
            self._vectors.device
        )
