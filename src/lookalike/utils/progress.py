"""Progress reporting without drawing: library code calls back, the caller decides how to show it.

A long step asks the caller's :data:`ProgressFactory` for an :data:`Advance` callback by giving a
description and the total amount of work, then calls it with each increment::

    advance = progress("ranking", total=len(queries))
    for chunk in chunks:
        ...
        advance(len(chunk))

The command line passes a factory that draws Rich progress bars; a Python user passes nothing
(silent) or any function of the same shape (a notebook widget, a logger, a test's recorder).
"""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], Advance]


def _ignore(amount: int) -> None:
    del amount


def silent(description: str, total: int) -> Advance:
    """A :data:`ProgressFactory` that shows nothing."""
    del description, total
    return _ignore


def tracker(progress: ProgressFactory | None, description: str, total: int) -> Advance:
    """The callback for one step: from ``progress``, or a silent one when it is None."""
    return (progress or silent)(description, total)
