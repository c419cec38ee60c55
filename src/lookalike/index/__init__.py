"""Nearest-neighbour indexes behind one protocol; exact torch search as the reference.

Importing this package registers every entry of :data:`INDEXES` ("exact_torch", "flat",
"ivf_flat", "ivf_pq", "hnsw").
"""

from lookalike.index.base import INDEXES, Index, create_index
from lookalike.index.exact import ExactTorchIndex, exact_search
from lookalike.index.faiss_index import FaissIndex, FlatIndex, HNSWIndex, IVFFlatIndex, IVFPQIndex
from lookalike.index.io import IndexMetadata, load_index, save_index, set_index_threshold
from lookalike.index.metrics import METRICS, Metric, get_metric
from lookalike.index.result import SearchResult
from lookalike.index.spec import IndexSpec

__all__ = [
    "INDEXES",
    "METRICS",
    "ExactTorchIndex",
    "FaissIndex",
    "FlatIndex",
    "HNSWIndex",
    "IVFFlatIndex",
    "IVFPQIndex",
    "Index",
    "IndexMetadata",
    "IndexSpec",
    "Metric",
    "SearchResult",
    "create_index",
    "exact_search",
    "get_metric",
    "load_index",
    "save_index",
    "set_index_threshold",
]
