"""``lookalike list``: the names each registry knows."""

from __future__ import annotations

from rich.table import Table

from lookalike.cli.common import console, friendly_errors
from lookalike.data.protocols import PROTOCOLS
from lookalike.data.sources import SOURCES
from lookalike.index import INDEXES
from lookalike.losses import LOSSES
from lookalike.models import BACKBONES, HEADS, POOLINGS
from lookalike.models.classifier import CLASSIFIER_HEADS
from lookalike.models.heads import ACTIVATIONS
from lookalike.search.open_set_scores import OBJECTIVES
from lookalike.search.threshold_rules import THRESHOLD_RULES
from lookalike.train.augment import AUGMENTATIONS
from lookalike.train.loggers import LOGGERS


@friendly_errors
def list_registered() -> None:
    """List the registered sources, protocols, backbones, poolings, heads, losses, indexes,
    training augmentations and loggers, and open-set objectives."""
    table = Table(title="Registered names")
    table.add_column("registry")
    table.add_column("names")
    for title, registry in [
        ("sources", SOURCES),
        ("protocols", PROTOCOLS),
        ("backbones", BACKBONES),
        ("poolings", POOLINGS),
        ("heads", HEADS),
        ("head activations", ACTIVATIONS),
        ("classifier heads", CLASSIFIER_HEADS),
        ("losses", LOSSES),
        ("indexes", INDEXES),
        ("augmentations", AUGMENTATIONS),
        ("loggers", LOGGERS),
        ("open-set objectives", OBJECTIVES),
        ("threshold rules", THRESHOLD_RULES),
    ]:
        table.add_row(title, ", ".join(registry.names()))
    console.print(table)
