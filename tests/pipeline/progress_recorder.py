"""A progress factory for tests: records each step's description, total and increments."""

from __future__ import annotations

from collections.abc import Callable


def recorder(steps: list[tuple[str, int, list[int]]]) -> Callable[[str, int], Callable[[int], None]]:
    """A :data:`~lookalike.utils.progress.ProgressFactory` appending ``(step, total, [n, ...])``."""

    def factory(description: str, total: int) -> Callable[[int], None]:
        steps.append((description, total, []))
        return steps[-1][2].append

    return factory
