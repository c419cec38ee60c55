"""Post-processing variants: the baseline agrees with the exact evaluation, QE with a naive loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.embed.store import EmbeddingSet
from lookalike.metrics import evaluate_retrieval
from lookalike.pipeline.postprocess import (
    PostprocessSpec,
    compare_variants,
    rank_variant,
    variant_steps,
    write_variants_csv,
)


def _clustered(n_classes: int = 6, per_class: int = 5, dim: int = 16, seed: int = 0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    rows = np.concatenate([c + 0.9 * rng.normal(size=(per_class, dim)) for c in centres])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    labels = [str(i // per_class) for i in range(len(rows))]
    ids = [f"img{i}" for i in range(len(rows))]
    return EmbeddingSet(rows.astype(np.float32), ids, ids, labels)


def test_variant_names() -> None:
    assert list(variant_steps(PostprocessSpec())) == ["baseline"]
    spec = PostprocessSpec(qe=True, k_reciprocal=True, whitening=True)
    assert variant_steps(spec) == {
        "baseline": [],
        "whitening": ["whitening"],
        "qe": ["qe"],
        "k_reciprocal": ["k_reciprocal"],
        "whitening+qe+k_reciprocal": ["whitening", "qe", "k_reciprocal"],
    }


@pytest.mark.parametrize("exclude_self", [False, True])
def test_baseline_metrics_equal_the_exact_evaluation(exclude_self: bool) -> None:
    everything = _clustered()
    query = everything.select(np.arange(0, 30, 3)) if not exclude_self else everything
    gallery = everything.select([i for i in range(30) if i % 3]) if not exclude_self else everything
    table = compare_variants(query, gallery, PostprocessSpec(depth=30), exclude_self=exclude_self)
    own = np.arange(30) if exclude_self else None
    exact = evaluate_retrieval(
        query.embeddings, query.labels, gallery.embeddings, gallery.labels,
        metric="cosine", ks=(1, 5, 10), self_index=own,
    )
    for key in ("recall@1", "recall@5", "recall@10", "precision@10", "map@5", "map@r", "weighted_topk"):
        assert table["baseline"][key] == pytest.approx(exact[key], abs=1e-9), key


def test_query_expansion_variant_matches_a_naive_loop() -> None:
    everything = _clustered(seed=1)
    query, gallery = everything.select(np.arange(0, 30, 3)), everything.select([i for i in range(30) if i % 3])
    spec = PostprocessSpec(qe=True, qe_n=2, qe_alpha=3.0, depth=5)
    result = rank_variant(query, gallery, ["qe"], spec)
    for row, q in enumerate(query.embeddings):
        similarity = gallery.embeddings @ q
        top = np.argsort(-similarity)[:2]
        expanded = q + sum(max(0.0, similarity[i]) ** 3 * gallery.embeddings[i] for i in top)
        expanded /= np.linalg.norm(expanded)
        assert result.indices[row].tolist() == np.argsort(-(gallery.embeddings @ expanded))[:5].tolist()


def test_k_reciprocal_and_whitening_variants_reorder_the_same_candidates(tmp_path: Path) -> None:
    everything = _clustered(n_classes=4, per_class=8, seed=2)
    spec = PostprocessSpec(k_reciprocal=True, whitening=True, k1=6, k2=3, depth=12)
    baseline = rank_variant(everything, everything, [], spec, exclude_self=True)
    reranked = rank_variant(everything, everything, ["k_reciprocal"], spec, exclude_self=True)
    assert (np.sort(baseline.indices, axis=1) == np.sort(reranked.indices, axis=1)).all()
    assert not (reranked.indices == np.arange(32)[:, None]).any()
    table = compare_variants(everything, everything, spec, exclude_self=True)
    assert set(table) == {"baseline", "whitening", "k_reciprocal", "whitening+k_reciprocal"}
    path = write_variants_csv(table, tmp_path / "variants.csv")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("variant,recall@1") and len(lines) == 5
