import math
import pytest

from components.common.config import MixtureConfig, ReplayConfig
from components.templates.mixture import REPLAY_PREFIX, largest_remainder, mix, mixture_rates, stream_of

N = {"a": 100, "b": 10, "c": 1000}


def rows(n: dict[str, int], prefix: str = "r") -> list[dict]:
    return [{"id": f"{prefix}:{t}-{i}#{t}#0", "record_id": f"{prefix}:{t}-{i}", "task": t, "template_id": f"{t}-1",
             "template_kind": "zero_shot", "inputs": f"in {t} {i}", "targets": f"out {i}"}
            for t, c in n.items() for i in range(c)]


def test_rates_with_cap_and_temperature_by_hand():
    # T = 1, K = 200: min(n, K) = 100, 10, 200 -> / 310
    assert mixture_rates(N, 200, 1.0) == pytest.approx({"a": 100 / 310, "b": 10 / 310, "c": 200 / 310})
    # T = 2: sqrt(100) = 10, sqrt(10) = 3.16228, sqrt(200) = 14.14214; sum 27.30442
    r = mixture_rates(N, 200, 2.0)
    assert r == pytest.approx({"a": 0.366241, "b": 0.115816, "c": 0.517943}, abs=1e-6)
    assert sum(r.values()) == pytest.approx(1.0)
    assert mixture_rates({"a": 5, "empty": 0}, 10, 1.0) == {"a": 1.0}  # no examples, no share


def test_largest_remainder_rounding():
    # T = 2, N = 310: quotas 113.53, 35.90, 160.56 -> floors 308, the 2 left go to b (.90) and c (.56)
    assert largest_remainder(310, mixture_rates(N, 200, 2.0)) == {"a": 113, "b": 36, "c": 161}
    assert largest_remainder(310, mixture_rates(N, 200, 1.0)) == {"a": 100, "b": 10, "c": 200}
    assert largest_remainder(10, {"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}) == {"x": 4, "y": 3, "z": 3}
    assert largest_remainder(7, {}) == {}


@pytest.mark.parametrize("temperature,expected", [(1.0, {"a": 100, "b": 10, "c": 200}),
                                                  (2.0, {"a": 113, "b": 36, "c": 161})])
def test_report_plans_counts_proportions_and_epochs(temperature, expected):
    cfg = MixtureConfig(cap=200, temperature=temperature)
    out, rep = mix(rows(N), cfg)
    assert rep["total"] == 310 and rep["replayed"] == 0 and rep["replay_examples"] == 0
    assert len(out) == sum(N.values())  # nothing drawn: the loader samples every example by weight
    assert rep["weights"] == pytest.approx(mixture_rates(N, 200, temperature))
    for t, info in rep["tasks"].items():
        assert info["available"] == N[t] and info["count"] == expected[t]
        assert abs(info["proportion"] - info["rate"]) <= 1 / 310  # within rounding
        assert info["epochs"] == pytest.approx(expected[t] / N[t])
        assert info["share"] == pytest.approx(info["proportion"]) and info["replayed"] == 0


def test_rows_are_every_example_sorted_and_independent_of_input_order():
    out, _ = mix(rows(N), MixtureConfig(cap=200))
    again, _ = mix(list(reversed(rows(N))), MixtureConfig(cap=200))
    assert [r["id"] for r in out] == [r["id"] for r in again] == sorted(r["id"] for r in rows(N))
    assert {stream_of(r) for r in out} == {"a", "b", "c"}


def test_total_examples_sets_the_planned_budget_only():
    cfg = MixtureConfig(cap=200, temperature=1.0, total_examples=1000)
    out, rep = mix(rows(N), cfg)
    assert len(out) == 1110 and rep["total"] == 1000
    assert {t: v["count"] for t, v in rep["tasks"].items()} == largest_remainder(1000, mixture_rates(N, 200, 1.0))
    _, by_budget = mix(rows(N), MixtureConfig(cap=200), default_total=620)
    assert by_budget["total"] == 620 and by_budget["tasks"]["b"]["epochs"] == pytest.approx(2.0)


def test_replay_weights_follow_the_old_runs_weights():
    # The old run replayed an older one itself: its train split holds "replay:" rows of task legacy.
    old = rows({"a": 40, "legacy": 30}, prefix="old") + rows({"legacy": 30}, prefix="replay:older")
    cfg = MixtureConfig(cap=200, replay=ReplayConfig(examples_uri="s3://b/prev/templates", ratio=0.3))
    out, rep = mix(rows(N), cfg, replay=old, old_weights={"a": 0.5, "legacy": 0.25, "replay/legacy": 0.25})
    replayed = [r for r in out if r["id"].startswith(REPLAY_PREFIX)]
    assert len(replayed) == rep["replay_examples"] == 100 and len(out) == 1110 + 100
    assert {stream_of(r) for r in replayed} == {"replay/a", "replay/legacy", "replay/replay/legacy"}
    w = rep["weights"]
    assert sum(w.values()) == pytest.approx(1.0) and rep["replay_ratio"] == pytest.approx(0.3)
    # Each old stream keeps its own weight inside the replayed 30 %, the older round's included.
    assert w["replay/a"] == pytest.approx(0.15) and w["replay/legacy"] == pytest.approx(0.075)
    assert w["replay/replay/legacy"] == pytest.approx(0.075)
    assert w["a"] == pytest.approx(0.7 * 100 / 310)
    assert rep["replayed"] == math.floor(0.3 * 310 + 0.5) == 93 and rep["new"] == 217
    assert rep["tasks"]["legacy"]["available"] == 0 and rep["tasks"]["legacy"]["replay_available"] == 60
    assert rep["tasks"]["legacy"]["replayed"] + rep["tasks"]["a"]["replayed"] == 93
    # A run without weights in its manifest: shares by its row counts.
    _, rep = mix(rows(N), cfg, replay=old)
    assert rep["weights"]["replay/legacy"] == pytest.approx(0.3 * 0.3)
    with pytest.raises(ValueError, match=r"replay \(s3://b/prev/templates\): no train examples to replay"):
        mix(rows(N), cfg, replay=[])


def test_replay_alone_when_no_new_examples():
    cfg = MixtureConfig(replay=ReplayConfig(examples_uri="s3://b/prev/templates", ratio=0.3))
    _, rep = mix([], cfg, replay=rows({"a": 4}, prefix="old"), default_total=10)
    assert rep["weights"] == {"replay/a": 1.0} and rep["replayed"] == 10
