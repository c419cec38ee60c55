"""``index`` and ``search`` as library calls: embeddings in, a saved index or ranked results out.

An index folder (see :mod:`lookalike.index.io`) keeps the gallery's ids, paths, labels and the
fingerprint of the embedder that made it, so a search with another model is refused rather than
silently wrong, and a rejection threshold tuned later travels with it.

Queries are an :class:`EmbeddingSet`, an embedding folder, or images; images are embedded with
the model given, which is checked against the index's fingerprint before any image is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EMBEDDINGS_FILE, EmbeddingSet, is_embedding_folder
from lookalike.index import (
    INDEXES,
    Index,
    check_index_device,
    create_index,
    get_metric,
    load_index,
    save_index,
)
from lookalike.index.result import SearchResult
from lookalike.metrics.metric_choice import AUTO_METRIC, CANDIDATE_METRICS, DEFAULT_MONITOR
from lookalike.models.spec import ModelSpec, build_embedder
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.metric_choice import METRIC_CHOICE_KEY, choose_metric_on
from lookalike.search.rejection import check_threshold
from lookalike.search.topk import search, self_exclusion
from lookalike.search.writers import results_format, write_results
from lookalike.utils.devices import check_device
from lookalike.utils.progress import ProgressFactory, tracker
from lookalike.utils.vectors import check_vectors

logger = logging.getLogger(__name__)

TRAIN_SAMPLE = 100_000


def build_index(
    gallery: EmbeddingSet | str | Path,
    output: str | Path,
    kind: str = "flat",
    metric: str = "cosine",
    device: str = "cpu",
    train_sample: int = TRAIN_SAMPLE,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    threshold: float | None = None,
    validation: EmbeddingSet | str | Path | None = None,
    validation_gallery: EmbeddingSet | str | Path | None = None,
    monitor: str = DEFAULT_MONITOR,
    **params: Any,
) -> tuple[Index, Path]:
    """Build an index over ``gallery`` and save it to ``output``.

    Args:
        gallery: ``(N, D)`` gallery embeddings with their ids, or their folder.
        output: The index folder.
        kind: Registered index name ("flat", "ivf_flat", "ivf_pq", "hnsw", "exact_torch").
        metric: "cosine", "ip", "l2", "l1", or "auto": the best of the four on ``validation``
            by ``monitor`` (:func:`~lookalike.pipeline.metric_choice.choose_metric_on`); the
            choice and every candidate's scores are stored with the index
            (``extra["metric_choice"]``, read back by :func:`stored_metric_choice`), and
            searches use the chosen metric.
        device: "cpu", "cuda[:N]" or "auto" (a GPU where this index runs on one here).
        train_sample: Rows drawn (seeded) to train indexes that need training (IVF, PQ).
        seed: Seed of that draw.
        extra: Stored with the metadata (e.g. ``{"source": "v2"}``).
        threshold: Rejection threshold stored with the index (``extra["threshold"]``), applied
            by :func:`search_index` unless it is given another.
        validation: Labelled validation embeddings (or their folder) for ``metric="auto"``:
            the queries, or, without ``validation_gallery``, a set ranked all-vs-all.
        validation_gallery: Validation gallery embeddings (or their folder).
        monitor: The retrieval metric ``metric="auto"`` maximises ("map@r", "recall@1" ...).
        **params: Index parameters (``nlist``, ``m``, ``M``, ``nprobe``, ``ef_search`` ...).

    Returns:
        The built index and its folder.

    Raises:
        ValueError: An unknown or absent ``device``, a NaN or infinite ``threshold``, an
            empty gallery, or ``metric="auto"`` without validation embeddings (or validation
            embeddings without it); nothing is written then.
    """
    device = check_index_device(device, kind)
    threshold = check_threshold(threshold, "threshold")
    auto = metric.strip().lower() == AUTO_METRIC
    if auto and validation is None:
        raise ValueError(
            "metric 'auto' chooses on validation embeddings; give them (--val-embeddings, "
            "or --val-query-embeddings with --val-gallery-embeddings)"
        )
    if not auto and (validation is not None or validation_gallery is not None):
        raise ValueError(
            f"validation embeddings are used by metric 'auto' only, not {metric!r}; drop them "
            "or use --metric auto"
        )
    if not auto:
        get_metric(metric)
    gallery_name = None if isinstance(gallery, EmbeddingSet) else Path(gallery)
    if not isinstance(gallery, EmbeddingSet):
        gallery = EmbeddingSet.load(gallery)
    if len(gallery) == 0:
        raise ValueError("the gallery has no embeddings; nothing to index")
    extra = dict(extra or {})
    if auto:
        supported = getattr(INDEXES.get(kind), "supported_metrics", CANDIDATE_METRICS)
        choice = choose_metric_on(
            validation, validation_gallery, fingerprint=gallery.fingerprint, monitor=monitor,
            candidates=[name for name in CANDIDATE_METRICS if name in supported],
        )
        logger.info("metric auto: %s (%s %.4f on %s)", choice.metric, monitor,
                    choice.scores[choice.metric][monitor], choice.split)
        metric = choice.metric
        extra[METRIC_CHOICE_KEY] = choice.to_dict()
    check_vectors(gallery.embeddings, _name(gallery_name, "gallery"), get_metric(metric).normalize)
    if threshold is not None:
        extra["threshold"] = threshold
    index = create_index(kind, gallery.dim, metric, device=device, **params)
    if not index.is_trained:
        rows = np.random.default_rng(seed).permutation(len(gallery))[:train_sample]
        logger.info("training %s index on %d of %d rows", kind, len(rows), len(gallery))
        index.train(gallery.embeddings[np.sort(rows)])
    index.add(gallery.embeddings, labels=gallery.labels)
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


@dataclass
class SearchOutcome:
    """What :func:`search_index` found and where it wrote it.

    Attributes:
        result: ``(Q, k)`` ranking into the index's rows (k clamped to the index size).
        path: The results file.
        queries: The query embeddings, row-aligned with ``result`` (embedded here when images
            were given; unreadable images are absent).
        threshold: The rejection threshold applied, None when none was.
    """

    result: SearchResult
    path: Path
    queries: EmbeddingSet
    threshold: float | None


def search_index(
    index_folder: str | Path,
    queries: EmbeddingSet | str | Path,
    output: str | Path,
    k: int = 10,
    device: str = "cpu",
    threshold: float | None = None,
    use_threshold: bool = True,
    exclude_self: bool = False,
    model: ModelSpec | None = None,
    embed: EmbedSpec | None = None,
    query_embeddings_dir: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> SearchOutcome:
    """Search a saved index with queries and write the ranked results.

    Args:
        index_folder: A folder written by :func:`build_index`.
        queries: Query embeddings, their folder, or query images (a source spec for
            :func:`~lookalike.data.sources.load_source`: a folder, a manifest ...) to embed;
            embeddings must come from the model that built the index (same fingerprint).
        output: Results file, ``.csv`` or ``.json``.
        k: Results per query (at most the index size).
        device: Where to load the index: "cpu", "cuda[:N]" or "auto" (a GPU where the index
            runs on one here; FAISS indexes need faiss-gpu).
        threshold: A rejection threshold that overrides the one stored with the index.
        use_threshold: Apply a threshold (given, or stored with the index) at all.
        exclude_self: Drop each query's own id from its results (queries are in the gallery).
        model: The model that embeds query images (None: ``ModelSpec()``); unused for
            embeddings.
        embed: How query images are embedded (None: ``EmbedSpec()``).
        query_embeddings_dir: Folder to keep the query images' embeddings in (resumable);
            None keeps them in memory, so nothing but ``output`` is written.
        progress: Asked for a step per long task: embedding query images (see
            :func:`~lookalike.pipeline.embedding.embed_images`), then "searching" the queries.

    Returns:
        The ranking, the written file, the query embeddings and the threshold applied.

    Raises:
        ValueError: Queries from another model or of another dimension, ``k < 1``, a NaN or
            infinite threshold (given or stored), a threshold together with
            ``use_threshold=False``, ``query_embeddings_dir`` for queries already embedded, an
            unknown or absent device, or an ``output`` that is neither ``.csv`` nor ``.json``.
        FileNotFoundError: The index folder or the queries do not exist.
    """
    # Every argument is checked before an image is embedded or a file written.
    results_format(output)
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if threshold is not None and not use_threshold:
        raise ValueError(
            f"a threshold ({threshold}) and no threshold at once: give a threshold (--threshold) "
            "or use_threshold=False (--no-threshold), not both"
        )
    threshold = check_threshold(threshold, "threshold")
    check_device(device)
    check_device((embed or EmbedSpec()).device)
    embedded = isinstance(queries, EmbeddingSet) or is_embedding_folder(queries)
    if embedded and query_embeddings_dir is not None:
        raise ValueError(
            f"the queries are already embeddings; query_embeddings_dir ({query_embeddings_dir}) "
            "keeps the embeddings of query images only"
        )
    if embedded:
        query_set = queries if isinstance(queries, EmbeddingSet) else EmbeddingSet.load(queries)
        index, metadata = load_index(index_folder, query_set.fingerprint, device=device)
    else:
        embedder = build_embedder(model or ModelSpec())
        index, metadata = load_index(index_folder, embedder.fingerprint(), device=device)
        query_set = embed_images(
            queries, query_embeddings_dir, model=embedder, embed=embed, progress=progress
        )
    query_name = Path(queries) if embedded and not isinstance(queries, EmbeddingSet) else None
    cosine = get_metric(metadata.metric).normalize
    check_vectors(query_set.embeddings, _name(query_name, "query"), cosine)
    if query_set.dim != metadata.dim:
        raise ValueError(
            f"queries have dimension {query_set.dim} but the index at {index_folder} holds "
            f"dimension {metadata.dim}; embed the queries with the model that built the index"
        )
    if not use_threshold:
        threshold = None
    elif threshold is None:
        threshold = check_threshold(
            metadata.threshold, f"the threshold stored with the index at {index_folder}"
        )
    exclude_rows = self_exclusion(query_set.ids, metadata.ids) if exclude_self else None
    advance = tracker(progress, "searching", len(query_set))
    result = search(index, query_set.embeddings, k, exclude_rows, progress=advance)
    path = write_results(
        result, query_set.ids, metadata.ids, metadata.paths, output, threshold=threshold
    )
    return SearchOutcome(result, path, query_set, threshold)


def _name(folder: Path | None, side: str) -> str:
    """How a message names a set of embeddings: its file, else its side."""
    return str(folder / EMBEDDINGS_FILE) if folder is not None else f"the {side} embeddings"
