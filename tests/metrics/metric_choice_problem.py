"""A labelled problem on which L1 clearly ranks best, and a naive MAP@R per metric."""

from __future__ import annotations

import numpy as np


def l1_wins_problem(seed: int = 0, classes: int = 6, per_class: int = 8, dim: int = 16) -> tuple[np.ndarray, list[str]]:
    """Classes share one direction and differ by norm (cosine and inner product cannot tell them
    apart), and a few coordinates carry Cauchy noise (L1 is hurt less by it than L2)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    vectors = np.outer(1.0 + labels, direction) + 0.1 * rng.normal(size=(len(labels), dim))
    spikes = rng.standard_cauchy(size=vectors.shape) * (rng.random(vectors.shape) < 0.15)
    return (vectors + spikes).astype(np.float32), [f"c{label}" for label in labels]


def naive_map_at_r(vectors: np.ndarray, labels: list[str], metric: str) -> float:
    """MAP@R (Musgrave et al. 2020) of every row against all others, by a plain loop."""
    x = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    values = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        if metric in ("cosine", "ip"):
            cost = [-(x[i] @ x[j]) for j in others]
        elif metric == "l2":
            cost = [np.sqrt(((x[i] - x[j]) ** 2).sum()) for j in others]
        else:
            cost = [np.abs(x[i] - x[j]).sum() for j in others]
        order = np.argsort(cost, kind="stable")
        relevant = np.array([labels[others[o]] == labels[i] for o in order])
        r = int(relevant.sum())
        if r == 0:
            continue
        hits = np.cumsum(relevant[:r])
        values.append(float((hits / np.arange(1, r + 1) * relevant[:r]).sum() / r))
    return float(np.mean(values))
