"""Review: ``search`` with ``exclude_rows`` naming no gallery row.

A row outside the gallery (an id map built against another gallery, an off-by-one) excluded
nothing: each query found its own image first and the metrics read it as a hit, exit 0.
``rank`` refused such rows; ``search`` now refuses them too, naming the row.
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import create_index
from lookalike.search.topk import search


@pytest.mark.parametrize("bad", [12, 40, -2])
def test_exclude_rows_outside_the_gallery_are_refused(bad: int) -> None:
    rows = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    index = create_index("flat", 4, "l2")
    index.add(rows)
    exclude = np.array([0, bad, 2])
    # Before the fix: no error, and query 1 (gallery row 1) came back first in its own list.
    with pytest.raises(ValueError, match=rf"exclude_rows\[1\] = {bad} .*\[0, 12\) or -1"):
        search(index, rows[:3], 4, exclude_rows=exclude)
    good = search(index, rows[:3], 4, exclude_rows=np.array([0, -1, 2]))
    assert good.indices[1, 0] == 1 and 0 not in good.indices[0] and 2 not in good.indices[2]
