"""The naive metric reference (tests/naive_metrics.py) against a 3-query example worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from naive_metrics import naive_ranking, naive_retrieval_metrics

# Gallery rows: id, vector (angle), label.
GALLERY_IDS = ["g0", "g1", "g2", "g3", "g4", "g5"]
GALLERY = np.array([[1, 0], [0, 1], [1, 1], [1, -1], [-1, 0], [-1, 1]], dtype=np.float32)
#                    0 deg   90      45      -45      180      135
GALLERY_LABELS = ["a", "b", "b", "a", "a", "b"]

# q0 is gallery row 0 itself; q1 is not in the gallery; q2's label "c" has no gallery item.
QUERY_IDS = ["g0", "q1", "q2"]
QUERIES = np.array([[1, 0], [-1, -1], [0, 1]], dtype=np.float32)
QUERY_LABELS = ["a", "a", "c"]


def test_rankings_break_ties_by_the_lower_row_and_drop_the_own_row() -> None:
    # q0 = (1,0): cosines 1, 0, .707, .707, -1, -.707 -> rows 0, 2, 3 (tie: 2 first), 1, 5, 4;
    # its own row 0 is dropped.
    assert naive_ranking(QUERIES[0], GALLERY, own_row=0) == [2, 3, 1, 5, 4]
    # q1 = (-1,-1): cosines -.707, -.707, -1, 0, .707, 0 -> row 4, then the tie 3 before 5, then
    # the tie 0 before 1, then 2.
    assert naive_ranking(QUERIES[1], GALLERY) == [4, 3, 5, 0, 1, 2]


def test_metrics_of_the_hand_worked_example() -> None:
    metrics = naive_retrieval_metrics(
        QUERIES, QUERY_LABELS, GALLERY, GALLERY_LABELS,
        query_ids=QUERY_IDS, gallery_ids=GALLERY_IDS,
        ks=(1, 3), precision_ks=(2,), map_at_k=4, weights={1: 600.0, 3: 300.0},
    )
    # q0 (label a): ranking 2 3 1 5 4 -> labels b a b b a -> relevance 0 1 0 0 1, R = 2
    #   (row 0, also "a", is q0 itself). Hits at ranks 2 and 5: P = 1/2, 2/5.
    #   recall@1 = 0, recall@3 = 1, precision@2 = 1/2
    #   AP    = (1/2 + 2/5) / 2          = 0.45
    #   MAP@4 = (1/2) / min(2, 4)        = 0.25
    #   MAP@R = (1/2) / 2  (rank <= 2)   = 0.25
    #   weighted = 600*0 + 300*1         = 300
    # q1 (label a): ranking 4 3 5 0 1 2 -> labels a a b a b b -> relevance 1 1 0 1 0 0, R = 3.
    #   Hits at ranks 1, 2, 4: P = 1, 1, 3/4.
    #   recall@1 = 1, recall@3 = 1, precision@2 = 1
    #   AP    = (1 + 1 + 3/4) / 3        = 11/12
    #   MAP@4 = (1 + 1 + 3/4) / min(3,4) = 11/12
    #   MAP@R = (1 + 1) / 3  (rank <= 3) = 2/3
    #   weighted = 600 + 300             = 900
    # q2 (label c): no relevant item -> left out of every mean, counted in
    #   n_queries_without_positives.
    # Means over q0 and q1:
    assert metrics == pytest.approx(
        {
            "recall@1": 0.5,                        # (0 + 1) / 2
            "recall@3": 1.0,                        # (1 + 1) / 2
            "precision@2": 0.75,                    # (1/2 + 1) / 2
            "map": 41 / 60,                         # (27/60 + 55/60) / 2 = 0.68333
            "map@4": 0.5 * (0.25 + 11 / 12),        # 7/12 = 0.58333
            "map@r": 0.5 * (0.25 + 2 / 3),          # 11/24 = 0.45833
            "weighted_topk": 600.0,                 # (300 + 900) / 2
            "n_queries": 3,
            "n_queries_without_positives": 1,
        },
        abs=1e-12,
    )


def test_without_ids_the_own_row_counts_as_a_first_rank_hit() -> None:
    # q0 alone, not excluded: ranking 0 2 3 1 5 4 -> relevance 1 0 1 0 0 1, R = 3;
    # hits at 1, 3, 6: AP = (1 + 2/3 + 1/2) / 3 = 13/18; MAP@R = (1 + 2/3) / 3 = 5/9.
    metrics = naive_retrieval_metrics(QUERIES[:1], ["a"], GALLERY, GALLERY_LABELS, ks=(1,))
    assert metrics["recall@1"] == 1.0
    assert metrics["map"] == pytest.approx(13 / 18, abs=1e-12)
    assert metrics["map@r"] == pytest.approx(5 / 9, abs=1e-12)
    # precision@10 divides by 10 even with 6 items; MAP@5 divides by min(R, 5) = 3.
    assert metrics["precision@10"] == pytest.approx(3 / 10, abs=1e-12)
    assert metrics["map@5"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-12)
