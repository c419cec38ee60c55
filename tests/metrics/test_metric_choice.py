"""choose_metric: the four metrics scored exactly, the best by a naive loop chosen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from metric_choice_problem import l1_wins_problem, naive_map_at_r

from lookalike.metrics.metric_choice import MetricChoice, choose_metric

METRICS = ("cosine", "ip", "l2", "l1")


def test_auto_picks_what_a_naive_loop_says_is_best() -> None:
    vectors, labels = l1_wins_problem()
    naive = {metric: naive_map_at_r(vectors, labels, metric) for metric in METRICS}
    ordered = sorted(naive.values())
    assert max(naive, key=naive.get) == "l1" and ordered[-1] - ordered[-2] > 0.1
    choice = choose_metric(vectors, vectors, labels, labels, exclude_rows=np.arange(len(labels)))
    assert choice.metric == "l1" and choice.monitor == "map@r"
    for metric in METRICS:
        assert choice.scores[metric]["map@r"] == pytest.approx(naive[metric], abs=1e-6)


def test_monitor_and_candidates_are_respected() -> None:
    vectors, labels = l1_wins_problem(seed=1)
    choice = choose_metric(
        vectors, vectors, labels, labels, exclude_rows=np.arange(len(labels)),
        candidates=("cosine", "ip"), monitor="recall@1",
    )
    assert list(choice.scores) == ["cosine", "ip"]
    best = max(choice.scores, key=lambda m: choice.scores[m]["recall@1"])
    assert choice.metric == best
    with pytest.raises(ValueError, match="unknown metric to monitor 'nope'.*map@r"):
        choose_metric(vectors, vectors, labels, labels, monitor="nope")
    with pytest.raises(ValueError, match="unknown metric 'cheb'"):
        choose_metric(vectors, vectors, labels, labels, candidates=("cheb",))


def test_normalised_rows_tie_cosine_ip_l2_and_ties_go_to_cosine() -> None:
    vectors, labels = l1_wins_problem(seed=2)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    choice = choose_metric(unit, unit, labels, labels, exclude_rows=np.arange(len(labels)),
                           candidates=("cosine", "ip", "l2"))
    values = {m: choice.scores[m]["map@r"] for m in ("cosine", "ip", "l2")}
    assert values["cosine"] == pytest.approx(values["ip"]) == pytest.approx(values["l2"])
    assert choice.metric == "cosine"


def test_choice_round_trips_through_json(tmp_path: Path) -> None:
    vectors, labels = l1_wins_problem()
    choice = choose_metric(vectors, vectors, labels, labels, exclude_rows=np.arange(len(labels)))
    loaded = MetricChoice.load(choice.save(tmp_path))
    assert loaded == choice
    (tmp_path / "metric_choice.json").write_text('{"metric": "cheb", "monitor": "m", "split": "v"}')
    with pytest.raises(ValueError, match="metric_choice.json.*unknown metric 'cheb'"):
        MetricChoice.load(tmp_path)
