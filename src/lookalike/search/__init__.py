"""Top-k search, re-ranking, rejection thresholds and result writers.

Import submodules directly (``lookalike.search.topk``, ``lookalike.search.writers``): the index
package imports :mod:`lookalike.search.result`, so this package stays free of index imports.
"""

from lookalike.search.result import SearchResult

__all__ = ["SearchResult"]
