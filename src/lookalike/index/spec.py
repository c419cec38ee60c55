"""The typed setting of the nearest-neighbour index searched.

:class:`IndexSpec` is a dataclass so that it is the typed default of a YAML config (see
:mod:`lookalike.config`) and can be overridden from the command line with dotted keys
(``index.kind=hnsw``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class IndexSpec:
    """The nearest-neighbour index searched.

    Attributes:
        kind: Registered index name ("flat", "ivf_flat", "ivf_pq", "hnsw", "exact_torch").
        metric: "cosine", "ip", "l2" or "l1".
        device: "cpu" or "cuda" (FAISS GPU where installed).
        params: Index parameters (``nlist``, ``m``, ``M``, ``nprobe``, ``ef_search`` ...).
    """

    kind: str = "flat"
    metric: str = "cosine"
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)
