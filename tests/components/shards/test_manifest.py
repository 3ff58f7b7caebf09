"""Length statistics from exact counts, and the stream weights' fallback."""
from __future__ import annotations

import numpy as np
import pytest

from components.shards.manifest import LengthCounts, length_stats, mixture_weights


def numpy_stats(a: np.ndarray, limit: int) -> dict:
    """What shards computed (format 1) from the full list of lengths."""
    return {"count": int(a.size), "mean": float(a.mean()), "p50": int(np.percentile(a, 50)),
            "p95": int(np.percentile(a, 95)), "max": int(a.max()), "truncated": int((a >= limit).sum()),
            "histogram": np.histogram(a, bins=10, range=(0, limit))[0].tolist()}


def test_stats_from_counts_equal_numpy_on_the_full_list():
    rng = np.random.default_rng(0)
    for _ in range(500):
        limit = int(rng.integers(5, 600))
        a = rng.integers(0, limit + 1, size=int(rng.integers(1, 200)))
        counts = LengthCounts()
        for part in np.array_split(a, 3):  # added in pieces, as batches and partitions do
            counts.add(part)
        got, want = length_stats(counts, limit), numpy_stats(a, limit)
        assert got.pop("mean") == pytest.approx(want.pop("mean"))
        assert got == want


def test_counts_merge_by_addition_and_empty_is_count_zero():
    a, b = LengthCounts(), LengthCounts()
    a.add(np.array([3, 3, 9]))
    b.add(np.array([1, 20]))
    a.add_counts(b.to_list())
    assert length_stats(a, 20)["count"] == 5 and length_stats(a, 20)["max"] == 20
    assert length_stats(a, 20)["truncated"] == 1
    assert length_stats(LengthCounts(), 20) == {"count": 0}


def test_weights_come_from_templates_else_from_train_rows():
    streams = {"qa": {"rows": 30}, "replay/qa": {"rows": 10}}
    assert mixture_weights({"mixture": {"weights": {"qa": 0.9, "replay/qa": 0.1}}}, streams) == {"qa": 0.9, "replay/qa": 0.1}
    assert mixture_weights({"mixture": {"tasks": {}}}, streams) == {"qa": 0.75, "replay/qa": 0.25}
    assert mixture_weights({}, {}) == {}
