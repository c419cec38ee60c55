"""The reference the index tests hold every search to: scores straight from the definitions."""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ["cosine", "ip", "l2", "l1"]


def naive_scores(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """``(Q, N)`` float64 scores, one query at a time, straight from the definitions."""
    q = queries.astype(np.float64)
    g = gallery.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    rows = []
    for query in q:
        if metric in ("cosine", "ip"):
            rows.append(g @ query)
        elif metric == "l2":
            rows.append(np.sqrt(((g - query) ** 2).sum(axis=1)))
        else:
            rows.append(np.abs(g - query).sum(axis=1))
    return np.stack(rows)
