"""The shards manifest (format_version 2): header, exact length statistics, and the merge of the
partial manifests that input partitions return.

Length statistics come from exact per-length counts (lengths are bounded by the truncation limit),
so they take constant memory, merge by addition across partitions, and equal numpy's percentiles
over the full list of lengths.
"""
from __future__ import annotations

import numpy as np

from components.common.config import MixtuneConfig
from components.common.schemas import SPLITS

FORMAT_VERSION = 2


class LengthCounts:
    """counts[n] = how many sequences have n tokens."""

    def __init__(self, counts: list[int] | np.ndarray | None = None):
        self.counts = np.asarray(counts if counts is not None else [], dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if len(lengths):
            self.add_counts(np.bincount(lengths))

    def add_counts(self, counts: list[int] | np.ndarray) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        if len(counts) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(counts) - len(self.counts)))
        self.counts[: len(counts)] += counts

    def to_list(self) -> list[int]:
        return self.counts.tolist()


def _percentile(cumulative: np.ndarray, q: float) -> float:
    """numpy.percentile(values, q) (its default, linear method, step by step so rounding agrees), from
    the cumulative counts instead of the sorted values."""
    n = int(cumulative[-1])
    quantile = q / 100
    virtual = (n - 1) * quantile
    lo = min(max(int(np.floor(virtual)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    gamma = virtual - np.floor(virtual)
    # the k-th smallest value (0-based) is the first length whose cumulative count exceeds k
    a, b = (int(np.searchsorted(cumulative, k, side="right")) for k in (lo, hi))
    return b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma


def length_stats(counts: LengthCounts, limit: int) -> dict:
    """count, mean, p50, p95, max, truncated (length >= limit), 10-bin histogram over [0, limit]."""
    c = counts.counts
    n = int(c.sum())
    if not n:
        return {"count": 0}
    values = np.arange(len(c))
    cumulative = np.cumsum(c)
    return {"count": n, "mean": float((values * c).sum() / n), "p50": int(_percentile(cumulative, 50)),
            "p95": int(_percentile(cumulative, 95)), "max": int(values[c > 0].max()),
            "truncated": int(c[limit:].sum()),
            "histogram": np.histogram(values, bins=10, range=(0, limit), weights=c)[0].astype(int).tolist()}


def mixture_weights(templates_manifest: dict, train_streams: dict[str, dict]) -> dict[str, float]:
    """The templates step's stream weights; without them, proportional to train rows per stream."""
    weights = (templates_manifest.get("mixture") or {}).get("weights")
    if weights:
        return {s: float(w) for s, w in sorted(weights.items())}
    total = sum(v["rows"] for v in train_streams.values())
    return {s: (v["rows"] / total if total else 0.0) for s, v in sorted(train_streams.items())}


def manifest_header(cfg: MixtuneConfig, templates_manifest: dict, tokenizer, tokenizer_uri: str) -> dict:
    version = templates_manifest["dataset_version"]
    return {
        "format": "parquet", "format_version": FORMAT_VERSION,
        "dataset_version": version, "dataset_versions": templates_manifest.get("dataset_versions", [version]),
        "tokenizer_uri": tokenizer_uri, "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
        "max_source_length": cfg.model.max_source_length, "max_target_length": cfg.model.max_target_length,
        "rows_per_shard": cfg.shards.rows_per_shard,
    }


def _merge_split(split: str, partials: list[dict], max_source: int, max_target: int) -> dict:
    partials = sorted(partials, key=lambda p: p["partition"])
    n = {p["num_partitions"] for p in partials}
    got = [p["partition"] for p in partials]
    if len(n) != 1 or got != list(range(n.pop())):
        raise ValueError(f"shards split {split!r}: partitions {got} of {sorted({p['num_partitions'] for p in partials})}"
                         " do not cover the split exactly once; a partition is missing or repeated")
    streams: dict[str, dict] = {}
    src, tgt = LengthCounts(), LengthCounts()
    for p in partials:  # partition order, so a stream's rows keep the templates' row order
        for name, s in p["streams"].items():
            into = streams.setdefault(name, {"task": s["task"], "rows": 0, "source_tokens": 0,
                                             "target_tokens": 0, "shards": []})
            for key in ("rows", "source_tokens", "target_tokens"):
                into[key] += s[key]
            into["shards"] += s["shards"]
        src.add_counts(p["source_length_counts"])
        tgt.add_counts(p["target_length_counts"])
    streams = dict(sorted(streams.items()))
    return {
        "rows": sum(s["rows"] for s in streams.values()),
        "source_tokens": sum(s["source_tokens"] for s in streams.values()),
        "target_tokens": sum(s["target_tokens"] for s in streams.values()),
        "source_lengths": length_stats(src, max_source), "target_lengths": length_stats(tgt, max_target),
        "streams": streams,
        "shards": [{**shard, "stream": name} for name, s in streams.items() for shard in s["shards"]],
    }


def merge_manifests(header: dict, partials: list[dict], templates_manifest: dict,
                    tokenize: dict | None = None) -> dict:
    """The full manifest from every partition's partial manifest (any order).

    `tokenize`: the timing block; by default the partitions' slowest time and their workers summed,
    i.e. the figures of a fan-out where all partitions run at once.
    """
    by_split = {s: [p for p in partials if p["split"] == s] for s in SPLITS}
    missing = [s for s, ps in by_split.items() if not ps]
    if missing:
        raise ValueError(f"shards: no partial manifest for split(s) {missing}")
    splits = {s: _merge_split(s, ps, header["max_source_length"], header["max_target_length"])
              for s, ps in by_split.items()}
    if tokenize is None:
        seconds = max(p["seconds"] for p in partials)
        tokenize = {"seconds": seconds, "workers": sum(p["workers"] for p in partials)}
    tokens = sum(v["source_tokens"] + v["target_tokens"] for v in splits.values())
    timing = {"seconds": round(tokenize["seconds"], 3), "workers": tokenize["workers"],
              "tokens_per_second": round(tokens / tokenize["seconds"], 1) if tokenize["seconds"] > 0 else 0.0}
    return {**header, "mixture_weights": mixture_weights(templates_manifest, splits["train"]["streams"]),
            "splits": splits, "tokenize": timing}
