"""Review: a missing value that is not ``None`` (NaN from pandas, ``pd.NA``, ``NaT``) is no label.

Such a value is not equal to itself, so as a dict key it is one class or many depending on object
identity: pandas' ``tolist()`` hands out one shared ``np.nan`` object, and every NaN distractor
became one class that NaN queries "found" (recall@1 1.0 over two queries where only one is
labelled). The one spelling of "no label" is ``None``; anything else that is not equal to itself
is refused with the row it is in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lookalike.metrics import evaluate_retrieval
from lookalike.ranking import encode_labels, rank


@pytest.mark.parametrize("missing", [np.nan, float("nan"), np.float32("nan"), pd.NA, pd.NaT])
def test_a_label_not_equal_to_itself_is_refused_by_row(missing: object) -> None:
    with pytest.raises(ValueError, match=r"gallery_labels\[2\] .* None"):
        encode_labels(["a"], ["a", "b", missing])
    with pytest.raises(ValueError, match=r"query_labels\[1\] .* None"):
        encode_labels(["a", missing], ["a", "b"], allow_unlabelled=True)


def test_pandas_missing_labels_no_longer_score_as_a_class() -> None:
    gallery = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    queries = np.array([[0, 1], [1, 0]], np.float32)
    gallery_labels = pd.Series(["a", "a", np.nan, np.nan]).tolist()  # one shared NaN object
    query_labels = pd.Series([np.nan, "a"]).tolist()
    assert gallery_labels[2] is query_labels[0]
    # Before the fix: {'recall@1': 1.0, 'n_queries': 2, ...}: the NaN query matched the NaN
    # distractors.
    with pytest.raises(ValueError, match=r"gallery_labels\[2\] is nan"):
        evaluate_retrieval(queries, query_labels, gallery, gallery_labels)
    with pytest.raises(ValueError, match=r"query_labels\[0\] is nan"):
        evaluate_retrieval(queries, query_labels, gallery, ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"gallery_labels\[2\] is nan"):
        rank(queries, gallery, ["a", "a"], gallery_labels)
    # Spelled None, the same data ranks as documented: distractors, an unlabelled query.
    ranking = rank(queries, gallery, [None, "a"], ["a", "a", None, None], k=4)
    assert ranking.num_relevant.tolist() == [0, 2]


def test_labels_equal_to_themselves_still_encode() -> None:
    codes = encode_labels([1.0, ("t", 2), "x"], [1.0, ("t", 2), "y", np.int64(1)])
    assert codes.gallery.tolist() == [0, 1, 2, 0]  # 1.0 == np.int64(1): one class
    assert codes.query.tolist() == [0, 1, 3]
