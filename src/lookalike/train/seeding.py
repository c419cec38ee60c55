"""Seeds derived from ``(seed, epoch, index)``: every random draw of training is a function of them.

The sampler orders epoch ``e`` from a generator seeded by ``(seed, e)`` and each image is augmented
under a torch seed derived from ``(seed, e, index)``. Worker processes, resuming from a checkpoint
or sharding over DDP ranks therefore never change which batch a step sees or how it is augmented.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (polynomial hash with a large odd multiplier)."""
    seed = 0
    for value in values:
        seed = (seed * 0x9E3779B97F4A7C15 + int(value) + 1) % (1 << 63)
    return seed


@contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (pml's samplers draw from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % (1 << 32))
    try:
        yield
    finally:
        np.random.set_state(state)
