"""The training loader: mixes shard streams by weight at load time, deterministically, resumably.

    loader = from_manifest(manifest, "train", store, cache_dir, weights_override=None,
                           seed=17, rank=rank, world=world, shuffle_block_shards=4)
    batch = loader.batch(16)                  # [Example(key, stream, input_ids, labels), ...]
    state = loader.state_dict()               # small JSON dict, the same on every rank
    loader.load_state_dict(state)             # O(1): exact mid-epoch resume at any step
    loader.example(("summarize", 12345))      # re-read any example by its key
    loader.counts()                           # {stream: samples drawn so far, all ranks}

Order. Global sample i draws its stream from a counter-based hash of (seed, i) against the
cumulative weights, so the draw needs no state but i and a weight change needs no re-tokenization.
Rank r of W takes the samples with i % W == r; every rank draws all samples, so every stream cursor
(samples taken from that stream so far) advances identically everywhere. Position p of stream s
is (epoch p // n_s, offset p % n_s); each (seed, stream, epoch) permutes the stream's shards, cuts
them into blocks of `shuffle_block_shards` and permutes the rows inside each block, so an epoch
visits every row once while holding only one block's shards per stream, and any position maps to
its row in O(1). Permutations are argsorts of a fixed hash, not numpy's RNG streams, so the order
does not depend on the numpy version a resumed run happens to have.

State. {"sample", "cursors", "seed", "world", "weights", "shuffle_block_shards"}: "sample" is the
next global sample and always a multiple of world (next() takes one sample per rank from each group
of W). Resuming with another seed, world size, weights, block size or stream set would be another
sample sequence, so load_state_dict refuses it and says what differs.
"""
from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.storage import Store
from components.train.shard_cache import ShardCache, ShardChecksumError

__all__ = ["Example", "MixtureLoader", "ShardCache", "ShardChecksumError", "from_manifest"]

CHUNK = 8192  # global samples drawn per vectorised step


@dataclass(frozen=True)
class Example:
    key: tuple[str, int]  # (stream, position in the stream), for loader.example(key)
    stream: str
    input_ids: list[int]
    labels: list[int]


def hash_key(*parts: object) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little"))


def mix(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    """splitmix64 of key + counter: independent uniform uint64s, vectorised, no state."""
    with np.errstate(over="ignore"):
        z = counters.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def permutation(key: np.uint64, n: int) -> np.ndarray:
    return np.argsort(mix(key, np.arange(n, dtype=np.uint64)), kind="stable")


def normalise_weights(weights: dict[str, float], streams: list[str]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(streams))
    if unknown:
        raise ValueError(f"mixture weights name unknown stream(s) {unknown}; the shards have {sorted(streams)}")
    bad = {s: w for s, w in weights.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"mixture weights must be finite and >= 0, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"mixture weights are all zero ({weights}): no stream can be drawn")
    return {s: float(weights.get(s, 0.0)) / total for s in sorted(streams)}


class _Block:
    """The rows of one block of shards, in shuffled order: local row j -> (shard entry, row)."""

    def __init__(self, entries: list[dict], key: np.uint64):
        self.entries = entries
        starts = np.cumsum([0] + [e["rows"] for e in entries])
        order = permutation(key, int(starts[-1]))
        shard = np.searchsorted(starts, order, side="right") - 1
        # Plain lists: indexing them per example is several times faster than numpy scalars.
        self.shard, self.row = shard.tolist(), (order - starts[shard]).tolist()

    def locate(self, j: int) -> tuple[dict, int]:
        return self.entries[self.shard[j]], self.row[j]


class _Stream:
    def __init__(self, entries: list[dict]):
        self.entries, self.rows = entries, sum(e["rows"] for e in entries)


class MixtureLoader:
    """One rank's view of the weighted mixture of streams (see the module docstring)."""

    def __init__(self, streams: dict[str, list[dict]], weights: dict[str, float], *, seed: int, rank: int,
                 world: int, cache: ShardCache, shuffle_block_shards: int = 4):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        if shuffle_block_shards < 1:
            raise ValueError("shuffle_block_shards must be >= 1")
        self.weights = normalise_weights(weights, list(streams))
        empty = [s for s, w in self.weights.items() if w > 0 and not sum(e["rows"] for e in streams[s])]
        if empty:
            raise ValueError(f"stream(s) {empty} have weight but no rows")
        self.seed, self.rank, self.world, self.block = int(seed), rank, world, shuffle_block_shards
        self.cache = cache
        self.names = sorted(streams)
        self.index = {s: k for k, s in enumerate(self.names)}
        self.streams = [_Stream(streams[s]) for s in self.names]
        drawn = [k for k, s in enumerate(self.names) if self.weights[s] > 0]
        self.drawn = np.array(drawn)  # zero-weight streams have no interval at all: never drawn
        self.cum = np.cumsum([self.weights[self.names[k]] for k in drawn])
        self.draw_key = hash_key("mixtune-loader-draw", self.seed)
        cache.hold_at_least(shuffle_block_shards * (len(drawn) + 1))
        self.blocks: OrderedDict[tuple[int, int, int], _Block] = OrderedDict()
        self.plans: OrderedDict[tuple[int, int], tuple[list[list[dict]], list[int]]] = OrderedDict()
        self._reset(0, np.zeros(len(self.names), dtype=np.int64))

    # -- the sample sequence ---------------------------------------------------------------------
    def streams_of(self, start: int, count: int) -> np.ndarray:
        """Stream indexes (into self.names) of global samples start .. start+count-1."""
        u = (mix(self.draw_key, np.arange(start, start + count, dtype=np.uint64)) >> np.uint64(11)) * 2.0**-53
        return self.drawn[np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.cum) - 1)]

    def _reset(self, sample: int, cursors: np.ndarray) -> None:
        self.chunk_start, self.chunk_cursors = sample, cursors
        self.chunk_draws = np.zeros(0, dtype=np.int64)
        self.mine: list[tuple[int, int]] = []
        self.taken = 0  # of self.mine

    def _fill(self) -> None:
        """Draw the next chunk of global samples; positions = cursor + earlier draws of that stream."""
        self.chunk_cursors = self.chunk_cursors + np.bincount(self.chunk_draws, minlength=len(self.names))
        self.chunk_start += len(self.chunk_draws)
        whole_groups = max(CHUNK - CHUNK % self.world, self.world)  # chunks end on a group boundary
        draws = self.streams_of(self.chunk_start, whole_groups)
        positions = np.empty(len(draws), dtype=np.int64)
        for k in np.unique(draws):
            hit = draws == k
            positions[hit] = self.chunk_cursors[k] + np.arange(int(hit.sum()))
        self.chunk_draws, self.taken = draws, 0
        self.mine = list(zip(draws[self.rank::self.world].tolist(), positions[self.rank::self.world].tolist()))

    def next(self) -> Example:
        if self.taken == len(self.mine):
            self._fill()
        k, p = self.mine[self.taken]
        self.taken += 1
        return self.example((self.names[k], p))

    def batch(self, n: int) -> list[Example]:
        return [self.next() for _ in range(n)]

    def __iter__(self):
        while True:
            yield self.next()

    # -- positions -> rows -------------------------------------------------------------------------
    def _plan(self, k: int, epoch: int) -> tuple[list[list[dict]], list[int]]:
        """One epoch of stream k: its blocks of shuffled shards and each block's first position."""
        plan = self.plans.get((k, epoch))
        if plan is None:
            entries = self.streams[k].entries
            order = permutation(hash_key("shards", self.seed, self.names[k], epoch), len(entries))
            blocks = [[entries[i] for i in order[b:b + self.block]] for b in range(0, len(order), self.block)]
            starts = [0]
            for blk in blocks:
                starts.append(starts[-1] + sum(e["rows"] for e in blk))
            plan = self.plans[(k, epoch)] = (blocks, starts)
            if len(self.plans) > 2 * len(self.names) + 4:
                self.plans.popitem(last=False)
        return plan

    def _block(self, k: int, epoch: int, b: int) -> _Block:
        blk = self.blocks.get((k, epoch, b))
        if blk is not None:
            self.blocks.move_to_end((k, epoch, b))
            return blk
        blocks, _ = self._plan(k, epoch)
        blk = self.blocks[(k, epoch, b)] = _Block(blocks[b], hash_key("rows", self.seed, self.names[k], epoch, b))
        if len(self.blocks) > 2 * len(self.names) + 4:
            self.blocks.popitem(last=False)
        # Entering a block: download its shards and the next block's while this one is read.
        following = blocks[b + 1] if b + 1 < len(blocks) else self._plan(k, epoch + 1)[0][0]
        self.cache.prefetch(blocks[b] + following)
        return blk

    def locate(self, key: tuple[str, int]) -> tuple[dict, int]:
        """(shard entry, row) holding the example at this key."""
        stream, p = key
        k = self.index.get(stream)
        n = self.streams[k].rows if k is not None else 0
        if p < 0 or n == 0:
            raise KeyError(f"no example at {key!r}")
        epoch, q = divmod(int(p), n)
        _, starts = self._plan(k, epoch)
        b = bisect.bisect_right(starts, q) - 1
        return self._block(k, epoch, b).locate(q - starts[b])

    def example(self, key: tuple[str, int]) -> Example:
        entry, row = self.locate(key)
        input_ids, labels = self.cache.read(entry).row(row)
        return Example((key[0], int(key[1])), key[0], input_ids, labels)

    # -- state ------------------------------------------------------------------------------------
    def _cursors(self) -> np.ndarray:
        consumed = self.chunk_draws[: self.taken * self.world]
        return self.chunk_cursors + np.bincount(consumed, minlength=len(self.names))

    def counts(self) -> dict[str, int]:
        """Samples drawn from each stream so far, over all ranks (the realised mixture)."""
        return dict(zip(self.names, self._cursors().tolist()))

    def state_dict(self) -> dict:
        return {"sample": self.chunk_start + self.taken * self.world, "cursors": self.counts(),
                "seed": self.seed, "world": self.world, "weights": dict(self.weights),
                "shuffle_block_shards": self.block}

    def load_state_dict(self, state: dict) -> None:
        differs = []
        for name, mine in (("seed", self.seed), ("world", self.world), ("shuffle_block_shards", self.block)):
            if state.get(name) != mine:
                differs.append(f"{name} was {state.get(name)!r}, now {mine!r}")
        saved = state.get("weights") or {}
        if set(saved) != set(self.weights) or any(not math.isclose(saved[s], w, rel_tol=1e-9, abs_tol=1e-12)
                                                  for s, w in self.weights.items()):
            differs.append(f"weights were {saved}, now {self.weights}")
        cursors = state.get("cursors") or {}
        if set(cursors) != set(self.names):
            differs.append(f"streams were {sorted(cursors)}, now {self.names}")
        elif not all(isinstance(c, int) and c >= 0 for c in cursors.values()):
            differs.append(f"cursors {cursors} are not all non-negative integers")
        sample = state.get("sample")
        if not isinstance(sample, int) or sample < 0 or sample % self.world:
            differs.append(f"sample {sample!r} is not a non-negative multiple of world {self.world}")
        if differs:
            raise ValueError("loader state does not fit this run (the sample sequence would differ): "
                             + "; ".join(differs))
        self._reset(sample, np.array([cursors[s] for s in self.names], dtype=np.int64))


def from_manifest(manifest: dict, split: str, store: Store, cache_dir: str | Path,
                  weights_override: dict[str, float] | None, seed: int, rank: int, world: int,
                  shuffle_block_shards: int = 4) -> MixtureLoader:
    """A loader over one split of a v2 shards manifest. weights_override replaces the manifest's
    weights entirely (streams it leaves out get 0) and is renormalised."""
    if manifest.get("format_version") != 2:
        raise ValueError(f"shards manifest format_version {manifest.get('format_version')!r}: this loader reads 2")
    info = manifest["splits"].get(split)
    if info is None:
        raise ValueError(f"the shards manifest has no split {split!r} (it has {sorted(manifest['splits'])})")
    streams = {s: v["shards"] for s, v in info["streams"].items()}
    if weights_override is not None:
        weights = dict(weights_override)  # unknown names are refused, listing the streams
    elif manifest.get("mixture_weights"):
        # Streams absent from this split (with weight 0) are harmless; with weight they are an error.
        weights = {s: w for s, w in manifest["mixture_weights"].items() if s in streams or w}
    else:
        weights = {s: float(v["rows"]) for s, v in info["streams"].items()}
    cache = ShardCache(store, cache_dir)
    return MixtureLoader(streams, weights, seed=seed, rank=rank, world=world, cache=cache,
                         shuffle_block_shards=shuffle_block_shards)
