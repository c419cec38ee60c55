"""Ranked neighbours to JSON hits, with the "no match" marker where the threshold puts it.

The marker is placed by :func:`lookalike.search.rejection.apply_threshold`, the rule every
ranked output of lookalike follows (results files, submissions): at the first rank whose score
fails the threshold, each list keeping at most ``k`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from lookalike.index.result import SearchResult
from lookalike.search.rejection import apply_threshold
from lookalike.serve.catalogue import Neighbour
from lookalike.serve.schemas import Hit, QueryResult

IMAGE_ROUTE = "/api/image/"


def image_url(item_id: str) -> str:
    """The URL of an item's image: its id percent-encoded as one path segment."""
    return IMAGE_ROUTE + quote(item_id, safe="")


def ranked_hits(
    result: SearchResult,
    neighbours: Sequence[Sequence[Neighbour]],
    queries: Sequence[str],
    k: int,
    threshold: float | None,
) -> list[QueryResult]:
    """One :class:`QueryResult` per query: its neighbours ranked, "no match" inserted.

    Args:
        result: ``(Q, k')`` ranking (padding -1), which places the "no match" marker.
        neighbours: Per query, the real neighbours of ``result``'s row, in order.
        queries: Per query, how the client named it.
        k: Entries kept per list.
        threshold: Rejection threshold in the scores' sense; None inserts no marker.
    """
    positions = apply_threshold(result, threshold) if threshold is not None else None
    answers = []
    for number, (query, found) in enumerate(zip(queries, neighbours)):
        entries: list[Neighbour | None] = list(found)
        if positions is not None:
            entries.insert(int(positions[number]), None)
        hits = [
            Hit(rank=rank, no_match=True)
            if entry is None
            else Hit(
                rank=rank,
                id=entry.id,
                label=entry.label,
                score=entry.score,
                image_url=image_url(entry.id) if entry.has_image else None,
            )
            for rank, entry in enumerate(entries[:k], start=1)
        ]
        answers.append(QueryResult(query=query, hits=hits))
    return answers
