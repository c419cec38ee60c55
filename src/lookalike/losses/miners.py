"""Tuple miners from pytorch-metric-learning, named for configs.

A miner picks which (anchor, positive, negative) triplets or pairs of a batch a metric loss sees::

    {"name": "triplet", "margin": 0.2, "miner": "semihard"}
    {"name": "contrastive", "miner": {"name": "multi_similarity", "epsilon": 0.1}}

Entries:
    "all", "semihard", "hard": pml ``TripletMarginMiner`` keeping triplets that violate the margin
        (``d(a, n) - d(a, p) <= margin``); "semihard" also requires ``d(a, n) > d(a, p)`` and
        "hard" ``d(a, n) <= d(a, p)`` (Schroff et al. 2015, FaceNet). The margin defaults to the
        loss's own margin.
    "batch_hard": pml ``BatchHardMiner``: per anchor, its farthest positive and nearest negative
        (Hermans et al. 2017, "In Defense of the Triplet Loss").
    "multi_similarity": pml ``MultiSimilarityMiner``: pairs harder than the hardest pair of the
        other kind by ``epsilon`` (Wang et al. 2019, "Multi-Similarity Loss").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pytorch_metric_learning.distances import BaseDistance
from pytorch_metric_learning.miners import (
    BaseMiner,
    BatchHardMiner,
    MultiSimilarityMiner,
    TripletMarginMiner,
)

from lookalike.registry import Registry

MINERS: Registry[BaseMiner] = Registry("miner")

_DEFAULT_TRIPLET_MARGIN = 0.2


@MINERS.register("all")
def all_violating_triplets(distance: BaseDistance, margin: float | None = None) -> BaseMiner:
    """Every triplet within ``margin`` of being violated (pml ``type_of_triplets="all"``)."""
    return TripletMarginMiner(margin=_margin(margin), type_of_triplets="all", distance=distance)


@MINERS.register("semihard")
def semihard_triplets(distance: BaseDistance, margin: float | None = None) -> BaseMiner:
    """Triplets whose negative is farther than the positive, but within ``margin`` (FaceNet)."""
    return TripletMarginMiner(
        margin=_margin(margin), type_of_triplets="semihard", distance=distance
    )


@MINERS.register("hard")
def hard_triplets(distance: BaseDistance, margin: float | None = None) -> BaseMiner:
    """Triplets whose negative is at least as close as the positive."""
    return TripletMarginMiner(margin=_margin(margin), type_of_triplets="hard", distance=distance)


@MINERS.register("batch_hard")
def batch_hard(distance: BaseDistance) -> BaseMiner:
    """One triplet per anchor: its hardest positive and hardest negative."""
    return BatchHardMiner(distance=distance)


@MINERS.register("multi_similarity")
def multi_similarity(distance: BaseDistance, epsilon: float = 0.1) -> BaseMiner:
    """Wang et al. 2019's pair mining with slack ``epsilon``."""
    return MultiSimilarityMiner(epsilon=epsilon, distance=distance)


def create_miner(
    spec: Mapping[str, Any] | str | None, *, distance: BaseDistance, margin: float | None = None
) -> BaseMiner | None:
    """A pml miner from ``"semihard"`` or ``{"name": "semihard", "margin": 0.1}``.

    Args:
        spec: The miner's name or a mapping with ``"name"`` and its options; ``None`` or "none"
            for no mining (every pair or triplet of the batch).
        distance: The loss's distance, so the miner ranks tuples the way the loss scores them.
        margin: The loss's margin, the default of the miners that take one.

    Raises:
        ValueError: Unknown miner (the message lists the valid names) or option.
    """
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        name = spec["name"]
        options = {key: value for key, value in spec.items() if key != "name"}
    else:
        raise ValueError(f"a miner spec is a name or a mapping with a 'name' key, got {spec!r}")
    factory = MINERS.get(name)
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted) | {"distance"} & set(options))
    if unknown:
        valid = ", ".join(key for key in accepted if key != "distance") or "(none)"
        raise ValueError(f"miner {name!r} does not take {', '.join(unknown)}; its options: {valid}")
    if "margin" in accepted:
        options.setdefault("margin", margin)
    return factory(distance=distance, **options)


def _margin(margin: float | None) -> float:
    return _DEFAULT_TRIPLET_MARGIN if margin is None else float(margin)
