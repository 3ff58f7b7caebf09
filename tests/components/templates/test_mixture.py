import math
from collections import Counter

import pytest

from components.common.config import MixtureConfig, ReplayConfig
from components.templates.mixture import REPLAY_PREFIX, largest_remainder, mix, mixture_rates

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
def test_mix_counts_proportions_and_epochs(temperature, expected):
    cfg = MixtureConfig(cap=200, temperature=temperature)
    out, rep = mix(rows(N), cfg)
    assert len(out) == rep["total"] == 310 and rep["replayed"] == 0
    assert Counter(r["task"] for r in out) == expected
    assert len({r["id"] for r in out}) == 310  # repeats get distinct ids
    for t, info in rep["tasks"].items():
        assert info["available"] == N[t] and info["count"] == expected[t]
        assert abs(info["proportion"] - info["rate"]) <= 1 / 310  # within rounding
        assert info["epochs"] == pytest.approx(expected[t] / N[t])
        assert info["share"] == pytest.approx(info["proportion"]) and info["replayed"] == 0


def test_small_tasks_repeat_in_whole_passes():
    out, rep = mix(rows(N), MixtureConfig(cap=200, temperature=2.0))
    b = Counter(r["record_id"] for r in out if r["task"] == "b")
    assert len(b) == 10 and sorted(b.values()) == [3] * 4 + [4] * 6  # 36 = 3 passes + 6
    assert rep["tasks"]["b"]["epochs"] == pytest.approx(3.6)
    c = Counter(r["record_id"] for r in out if r["task"] == "c")
    assert len(c) == 161 and set(c.values()) == {1}  # sampled without replacement


def test_total_examples_override_and_determinism():
    cfg = MixtureConfig(cap=200, temperature=1.0, total_examples=1000, seed=5)
    out, rep = mix(rows(N), cfg)
    assert len(out) == 1000 and rep["total"] == 1000
    assert Counter(r["task"] for r in out) == largest_remainder(1000, mixture_rates(N, 200, 1.0))
    again, _ = mix(list(reversed(rows(N))), cfg)  # input order does not matter
    assert [r["id"] for r in again] == [r["id"] for r in out]
    other, _ = mix(rows(N), cfg.model_copy(update={"seed": 6}))
    assert [r["id"] for r in other] != [r["id"] for r in out]
    assert [r["task"] for r in out[:50]] != sorted(r["task"] for r in out[:50])  # shuffled across tasks


def test_replay_ratio_is_exact_and_size_stays_n():
    old = rows({"a": 40, "legacy": 60}, prefix="old")
    cfg = MixtureConfig(cap=200, replay=ReplayConfig(examples_uri="s3://b/prev/templates", ratio=0.3))
    out, rep = mix(rows(N), cfg, replay=old)
    replayed = [r for r in out if r["id"].startswith(REPLAY_PREFIX)]
    assert len(out) == 310 and len(replayed) == rep["replayed"] == math.floor(0.3 * 310 + 0.5) == 93
    assert rep["new"] == 310 - 93 and len({r["id"] for r in out}) == 310
    assert {r["task"] for r in replayed} == {"a", "legacy"}  # tasks kept, even ones not in the new data
    assert all(r["id"][len(REPLAY_PREFIX):].split("@")[0] in {o["id"] for o in old} for r in replayed)
    for t, info in rep["tasks"].items():
        assert info["replayed"] == sum(r["task"] == t for r in replayed)
        assert info["replay_share"] == pytest.approx(info["replayed"] / 310)
    assert rep["tasks"]["legacy"]["available"] == 0 and rep["tasks"]["legacy"]["count"] == 0
    assert sum(i["replay_share"] for i in rep["tasks"].values()) == pytest.approx(93 / 310)
    # The new part keeps its mixture rates at the smaller size.
    assert Counter(r["task"] for r in out if r not in replayed) == largest_remainder(217, mixture_rates(N, 200, 1.0))
    # A tiny replay source repeats to fill its share.
    out, rep = mix(rows(N), cfg, replay=old[:5])
    assert rep["replayed"] == 93 and sum(r["id"].startswith(REPLAY_PREFIX) for r in out) == 93
    with pytest.raises(ValueError, match="s3://b/prev/templates: no train examples to replay"):
        mix(rows(N), cfg, replay=[])
