"""The query and gallery embeddings an ``evaluate`` run ranks, from images or from folders.

With a source of images the source is listed and split by the protocol once, and each image is
embedded once (once in all when the protocol queries every image against all others) into the run
folder's ``embeddings/`` (the folder being built, which a kill leaves in place), so an interrupted
run resumes where it stopped. Precomputed folders are loaded, and verified, instead. What was
loaded (the split, the embedder) is kept for the caller to reuse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lookalike.data.protocols import RetrievalSplit, make_split
from lookalike.data.records import ImageSet
from lookalike.data.sources import load_source
from lookalike.embed.store import EmbeddingSet
from lookalike.metrics.metric_choice import AUTO_METRIC
from lookalike.models import Embedder
from lookalike.models.spec import build_embedder
from lookalike.pipeline.embedding import embed_images
from lookalike.pipeline.evaluate_config import EvaluateConfig
from lookalike.runs import RunRecord
from lookalike.search.topk import self_exclusion
from lookalike.utils.progress import ProgressFactory

logger = logging.getLogger(__name__)


@dataclass
class EvaluationInputs:
    """What an ``evaluate`` run ranks.

    Attributes:
        query: Query embeddings.
        gallery: Gallery embeddings.
        exclude_self: Every query is a gallery item (by id) and never its own match.
        split: The protocol's split of the source (None for precomputed embeddings).
        embedder: The model that embedded the images (None for precomputed embeddings).
        val: The protocol's val images' embeddings, loaded only where ``index.metric=auto``
            chooses on them (None otherwise, and when the protocol has no val split).
    """

    query: EmbeddingSet
    gallery: EmbeddingSet
    exclude_self: bool
    split: RetrievalSplit | None = None
    embedder: Embedder | None = None
    val: EmbeddingSet | None = None

    def skipped(self) -> list[dict[str, str]]:
        """Images that could not be read on either side, once each."""
        seen: dict[str, dict[str, str]] = {}
        for embedding_set in (self.query, self.gallery):
            for entry in embedding_set.info.get("skipped", []):
                seen.setdefault(str(entry.get("path")), entry)
        return list(seen.values())


def rows_of(embeddings: EmbeddingSet, images: ImageSet) -> EmbeddingSet:
    """The rows of ``embeddings`` holding ``images``, in their order (unreadable ones absent)."""
    rows = self_exclusion(images.ids, embeddings.ids)
    return embeddings.select(rows[rows >= 0])


def split_embeddings(
    embeddings: EmbeddingSet, config: EvaluateConfig
) -> tuple[EmbeddingSet, EmbeddingSet, bool]:
    """Split one precomputed embedding folder by the protocol, as a source of images would be."""
    split = make_split(embeddings.to_image_set(), config.protocol, **config.protocol_args)
    return rows_of(embeddings, split.query), rows_of(embeddings, split.gallery), split.exclude_self


def chooses_metric(config: EvaluateConfig) -> bool:
    """Whether the run chooses its metric on validation data (``index.metric=auto``)."""
    return config.index.metric.strip().lower() == AUTO_METRIC


def load_precomputed(config: EvaluateConfig) -> EvaluationInputs:
    """The embedding folders of ``config``: one split by the protocol, or query and gallery."""
    if config.embeddings:
        embeddings = EmbeddingSet.load(config.embeddings)
        split = make_split(embeddings.to_image_set(), config.protocol, **config.protocol_args)
        val = None
        if chooses_metric(config) and split.val is not None and len(split.val):
            val = rows_of(embeddings, split.val)
        return EvaluationInputs(
            rows_of(embeddings, split.query), rows_of(embeddings, split.gallery),
            split.exclude_self, val=val,
        )
    query = EmbeddingSet.load(config.query_embeddings)
    gallery = EmbeddingSet.load(config.gallery_embeddings)
    if query.fingerprint and gallery.fingerprint and query.fingerprint != gallery.fingerprint:
        raise ValueError(
            f"{config.query_embeddings} and {config.gallery_embeddings} were embedded by "
            f"different models ({query.fingerprint} vs {gallery.fingerprint}); embed both with one"
        )
    # The same images on both sides (e.g. one folder given twice): each is not its own match.
    return EvaluationInputs(query, gallery, set(query.ids) <= set(gallery.ids))


def embed_source(
    config: EvaluateConfig,
    embedder: Embedder | None = None,
    progress: ProgressFactory | None = None,
    run_folder: str | Path | None = None,
) -> EvaluationInputs:
    """Split ``config.source`` by the protocol and embed both sides into the run folder
    (``run_folder``, the folder being built; ``config.output`` by default)."""
    split = make_split(load_source(config.source), config.protocol, **config.protocol_args)
    embedder = embedder or build_embedder(config.model)
    record = RunRecord(config.output if run_folder is None else run_folder)

    def embed(images: ImageSet, name: str) -> EmbeddingSet:
        logger.info("embedding %d %s images", len(images), name)
        return embed_images(images, record.embeddings_dir(name), model=embedder,
                            embed=config.embed, progress=progress)

    val = None
    if chooses_metric(config) and split.val is not None and len(split.val):
        val = embed(split.val, "val")
    if split.exclude_self:
        gallery = embed(split.gallery, "all")
        return EvaluationInputs(
            rows_of(gallery, split.query), gallery, True, split, embedder, val
        )
    query, gallery = embed(split.query, "query"), embed(split.gallery, "gallery")
    return EvaluationInputs(query, gallery, False, split, embedder, val)


def load_inputs(
    config: EvaluateConfig,
    embedder: Embedder | None = None,
    progress: ProgressFactory | None = None,
    run_folder: str | Path | None = None,
) -> EvaluationInputs:
    """The query and gallery embeddings of ``config`` (see the module docstring); images are
    embedded into ``run_folder`` (``config.output`` by default)."""
    if config.source:
        return embed_source(config, embedder, progress, run_folder)
    return load_precomputed(config)


def embedding_folders(
    config: EvaluateConfig, inputs: EvaluationInputs, run_folder: str | Path | None = None
) -> tuple[str, str]:
    """Folders of the query and gallery embeddings as ``run.json`` names them.

    Sides split from one precomputed folder are saved beside the run (in ``run_folder``, the
    folder being built; ``config.output`` by default), so that the run folder alone says what
    was ranked.
    """
    if config.query_embeddings and config.gallery_embeddings:
        return str(Path(config.query_embeddings).resolve()), str(
            Path(config.gallery_embeddings).resolve()
        )
    record = RunRecord(config.output if run_folder is None else run_folder)
    gallery_name = "all" if inputs.exclude_self else "gallery"
    if config.embeddings:
        inputs.gallery.save(record.embeddings_dir(gallery_name))
    gallery_folder = record.relative(record.embeddings_dir(gallery_name))
    if inputs.exclude_self and len(inputs.query) == len(inputs.gallery):
        return gallery_folder, gallery_folder
    if config.embeddings or inputs.exclude_self:
        inputs.query.save(record.embeddings_dir("query"))
    return record.relative(record.embeddings_dir("query")), gallery_folder
