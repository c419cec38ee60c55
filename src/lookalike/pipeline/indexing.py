"""``index`` and ``search`` as library calls: embeddings in, a saved index or ranked results out.

An index folder (see :mod:`lookalike.index.io`) keeps the gallery's ids, paths, labels and the
fingerprint of the embedder that made it, so a search with another model is refused rather than
silently wrong, and a rejection threshold tuned later travels with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from lookalike.embed.store import EmbeddingSet
from lookalike.index import Index, create_index, load_index, save_index
from lookalike.search.result import SearchResult
from lookalike.search.topk import drop_rows, search, self_exclusion
from lookalike.search.writers import write_results

logger = logging.getLogger(__name__)

TRAIN_SAMPLE = 100_000


def build_index(
    gallery: EmbeddingSet,
    output: str | Path,
    kind: str = "flat",
    metric: str = "cosine",
    device: str = "cpu",
    train_sample: int = TRAIN_SAMPLE,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    **params: Any,
) -> tuple[Index, Path]:
    """Build an index over ``gallery`` and save it to ``output``.

    Args:
        gallery: ``(N, D)`` gallery embeddings with their ids.
        output: The index folder.
        kind: Registered index name ("flat", "ivf_flat", "ivf_pq", "hnsw", "exact_torch").
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda[:N]".
        train_sample: Rows drawn (seeded) to train indexes that need training (IVF, PQ).
        seed: Seed of that draw.
        extra: Stored with the metadata (e.g. ``{"threshold": 0.42}``).
        **params: Index parameters (``nlist``, ``m``, ``M``, ``nprobe``, ``ef_search`` ...).

    Returns:
        The built index and its folder.
    """
    if len(gallery) == 0:
        raise ValueError("the gallery has no embeddings; nothing to index")
    index = create_index(kind, gallery.dim, metric, device=device, **params)
    if not index.is_trained:
        rows = np.random.default_rng(seed).permutation(len(gallery))[:train_sample]
        logger.info("training %s index on %d of %d rows", kind, len(rows), len(gallery))
        index.train(gallery.embeddings[np.sort(rows)])
    index.add(gallery.embeddings)
    folder = save_index(
        index,
        output,
        ids=gallery.ids,
        paths=gallery.paths,
        labels=gallery.labels,
        fingerprint=gallery.fingerprint,
        extra=extra,
    )
    return index, Path(folder)


def search_index(
    index_folder: str | Path,
    queries: EmbeddingSet,
    output: str | Path,
    k: int = 10,
    device: str = "cpu",
    threshold: float | None = None,
    use_threshold: bool = True,
    exclude_self: bool = False,
) -> tuple[SearchResult, Path]:
    """Search a saved index with query embeddings and write the ranked results.

    Args:
        index_folder: A folder written by :func:`build_index`.
        queries: Query embeddings; their fingerprint must match the index's.
        output: Results file, ``.csv`` or ``.json``.
        k: Results per query.
        device: Where to load the index.
        threshold: A rejection threshold that overrides the one stored with the index.
        use_threshold: Apply a threshold (given, or stored with the index) at all.
        exclude_self: Drop each query's own id from its results (queries are in the gallery).

    Returns:
        The ``(Q, k)`` result into the index's rows, and the written file.
    """
    index, metadata = load_index(index_folder, queries.fingerprint, device=device)
    if queries.dim != metadata.dim:
        raise ValueError(
            f"queries have dimension {queries.dim} but the index at {index_folder} holds "
            f"dimension {metadata.dim}; embed the queries with the model that built the index"
        )
    if threshold is None:
        threshold = metadata.threshold
    depth = min(k + int(exclude_self), metadata.ntotal)
    with Progress(transient=True) as bar:
        task = bar.add_task("searching", total=len(queries))
        result = search(index, queries.embeddings, depth, progress=lambda n: bar.advance(task, n))
    if exclude_self:
        result = drop_rows(result, self_exclusion(queries.ids, metadata.ids), k)
    path = write_results(
        result,
        queries.ids,
        metadata.ids,
        metadata.paths,
        output,
        threshold=threshold if use_threshold else None,
    )
    return result, path
