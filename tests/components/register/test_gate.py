"""The promotion gate as a pure function, with hand-written metrics."""
from __future__ import annotations

import pytest

from components.register.core import decide


def metrics(candidate: float, champion: float | None = None, version: str | None = None) -> dict:
    return {
        "candidate": {"rougeL": candidate, "rouge1": candidate + 5},
        "champion": None if champion is None else {"rougeL": champion, "rouge1": champion + 5},
        "champion_version": version,
    }


def test_first_model_becomes_champion():
    d = decide("rougeL", metrics(1.0), current_champion=None, min_improvement=0.0)
    assert d.promote and "first model" in d.reason


def test_better_candidate_is_promoted():
    d = decide("rougeL", metrics(30.0, 25.0, "3"), current_champion="3", min_improvement=0.0)
    assert d.promote and "30.0000 > champion v3 25.0000" in d.reason


@pytest.mark.parametrize("candidate", [25.0, 24.9])
def test_equal_or_worse_candidate_is_not_promoted(candidate):
    d = decide("rougeL", metrics(candidate, 25.0, "3"), current_champion="3", min_improvement=0.0)
    assert not d.promote and "does not beat champion v3" in d.reason


def test_min_improvement_is_a_margin():
    m = metrics(25.5, 25.0, "3")
    assert not decide("rougeL", m, "3", min_improvement=1.0).promote
    assert decide("rougeL", m, "3", min_improvement=0.4).promote


def test_gate_uses_the_configured_metric():
    m = {"candidate": {"rougeL": 10.0, "rouge1": 40.0}, "champion": {"rougeL": 20.0, "rouge1": 30.0},
         "champion_version": "1"}
    assert not decide("rougeL", m, "1", 0.0).promote
    assert decide("rouge1", m, "1", 0.0).promote


def test_champion_changed_since_evaluation_is_not_promoted():
    d = decide("rougeL", metrics(90.0, 10.0, "3"), current_champion="4", min_improvement=0.0)
    assert not d.promote and "champion changed since evaluation (v3 then, v4 now)" in d.reason
    # Evaluated when there was no champion, but one appeared before registration.
    d = decide("rougeL", metrics(90.0), current_champion="1", min_improvement=0.0)
    assert not d.promote and "no champion then, v1 now" in d.reason


def test_champion_removed_since_evaluation_promotes():
    d = decide("rougeL", metrics(5.0, 10.0, "3"), current_champion=None, min_improvement=0.0)
    assert d.promote and "alias removed" in d.reason


def test_nan_candidate_never_wins():
    assert not decide("rougeL", metrics(float("nan"), 1.0, "1"), "1", 0.0).promote


def test_missing_metrics_are_explicit():
    with pytest.raises(ValueError, match="no candidate 'rougeL'"):
        decide("rougeL", {"candidate": {}, "champion": None, "champion_version": None}, None, 0.0)
    d = decide("rougeL", {"candidate": {"rougeL": 1.0}, "champion": None, "champion_version": "2"}, "2", 0.0)
    assert not d.promote and "no champion 'rougeL'" in d.reason
