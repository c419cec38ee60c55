"""Rows that would rank wrongly are refused, naming the source and the first bad row."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.utils.folders import ArtefactError
from lookalike.utils.vectors import check_vectors


def test_finite_rows_pass_and_zero_rows_pass_without_cosine() -> None:
    rows = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    rows[1] = 0.0
    check_vectors(rows, "x.npy")
    check_vectors(np.zeros((0, 3), np.float32), "empty", cosine=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_first_non_finite_row_is_named(bad: float) -> None:
    rows = np.ones((6, 3), np.float32)
    rows[4, 2] = bad
    rows[5, 0] = bad
    with pytest.raises(ArtefactError, match=r"^x.npy: row 4 holds NaN or infinite values \(2 such"):
        check_vectors(rows, "x.npy")


def test_zero_rows_are_refused_under_cosine_only() -> None:
    rows = np.ones((4, 3), np.float32)
    rows[2] = 0.0
    check_vectors(rows, "g.npy", cosine=False)
    with pytest.raises(ArtefactError, match=r"g.npy: row 2 is all zeros .* cosine"):
        check_vectors(rows, "g.npy", cosine=True)
