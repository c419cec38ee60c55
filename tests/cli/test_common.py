"""The CLI's progress bars: each step a library asks for is a bar its callback advances."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from lookalike.cli.common import dotted_settings, progress_bars


def test_each_step_gets_a_bar_advanced_by_increments(monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Progress] = []
    original = Progress.start
    monkeypatch.setattr(Progress, "start", lambda self: bars.append(self) or original(self))
    with progress_bars() as progress:
        embedding = progress("embedding query", 12)
        for step in (5, 5, 2):
            embedding(step)
        progress("searching", 12)(12)
        tasks = [(t.description, t.completed, t.total) for t in bars[0].tasks]
        assert tasks == [("embedding query", 12, 12), ("searching", 12, 12)]
    assert len(bars) == 1 and not bars[0].live.is_started


def test_dotted_settings_refuse_a_key_set_twice() -> None:
    assert dotted_settings({"output": "a", "source": None}, ["k=5"]) == ["output=a", "k=5"]
    with pytest.raises(ValueError, match=r"output is set twice, by an option \(a\) and by"):
        dotted_settings({"output": "a"}, ["output=b"])
