"""The ranking of a gallery for every query, computed once and read by everything downstream.

:func:`rank` scores queries against the gallery exactly, chunk by chunk, and returns a
:class:`Ranking`: each query's best gallery rows with their scores, and the rank of every relevant
item, with self-exclusion and junk applied once. Metrics, open-set scoring, re-ranking variants,
reports and submission writers read it; nothing downstream ranks again.
"""

from lookalike.ranking.compute import rank
from lookalike.ranking.labels import (
    UNLABELLED,
    UNLABELLED_GALLERY,
    UNLABELLED_QUERY,
    LabelCodes,
    encode_labels,
    relevance,
)
from lookalike.ranking.ranking import RANKING_FILE, Ranking

__all__ = [
    "RANKING_FILE",
    "UNLABELLED",
    "UNLABELLED_GALLERY",
    "UNLABELLED_QUERY",
    "LabelCodes",
    "Ranking",
    "encode_labels",
    "rank",
    "relevance",
]
