"""Top-k search, re-ranking, rejection thresholds and result writers.

Import submodules directly (``lookalike.search.topk``, ``lookalike.search.writers``).
:class:`SearchResult` lives in :mod:`lookalike.index.result` (indexes return it); it is
re-exported here for convenience.
"""

from lookalike.index.result import SearchResult

__all__ = ["SearchResult"]
