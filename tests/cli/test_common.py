"""The CLI's progress bar: library callbacks advance it by their increments."""

from __future__ import annotations

from rich.progress import Progress

from lookalike.cli.common import progress_bar


def test_progress_bar_callback_advances_by_increments(monkeypatch) -> None:
    bars: list[Progress] = []
    original = Progress.__enter__
    monkeypatch.setattr(Progress, "__enter__", lambda self: bars.append(self) or original(self))
    with progress_bar("searching", total=10) as advance:
        for step in (3, 4, 3):
            advance(step)
        task = bars[0].tasks[0]
        assert (task.description, task.completed, task.total) == ("searching", 10, 10)
    with progress_bar("embedding") as advance:
        advance(7)
        assert bars[1].tasks[0].completed == 7 and bars[1].tasks[0].total is None
