"""Batched extraction of embeddings and the files that hold them."""

from lookalike.embed.extract import EmbedderLike, embed_image_set
from lookalike.embed.spec import EmbedSpec
from lookalike.embed.store import EmbeddingSet
from lookalike.embed.tta import AugmentedViews

__all__ = ["AugmentedViews", "EmbedSpec", "EmbedderLike", "EmbeddingSet", "embed_image_set"]
