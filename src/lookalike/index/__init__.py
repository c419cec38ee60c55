"""Nearest-neighbour indexes behind one protocol; exact torch search as the reference.

Importing this package registers every entry of :data:`INDEXES` ("exact_torch", "flat",
"ivf_flat", "ivf_pq", "hnsw", "milvus"; pymilvus itself is imported only when a milvus index is
built).
"""

from lookalike.index.base import INDEXES, Index, create_index
from lookalike.index.devices import check_index_device, resolve_index_device
from lookalike.index.exact import ExactTorchIndex, exact_search
from lookalike.index.faiss_ann import HNSWIndex, IVFFlatIndex, IVFPQIndex
from lookalike.index.faiss_index import FaissIndex, FlatIndex
from lookalike.index.io import IndexMetadata, load_index, save_index, set_index_threshold
from lookalike.index.metrics import METRICS, Metric, get_metric
from lookalike.index.milvus_index import MilvusIndex
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
    "MilvusIndex",
    "SearchResult",
    "check_index_device",
    "create_index",
    "exact_search",
    "get_metric",
    "load_index",
    "resolve_index_device",
    "save_index",
    "set_index_threshold",
]
