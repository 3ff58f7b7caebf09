"""Shards on local disk: downloaded once, verified, decoded on demand (used by loader.py).

A shard is cached under `<cache_dir>/<sha256>.parquet`: content-addressed, so ranks on one machine
and reruns share it and a changed shard can never be mistaken for the old one. A download goes to
a temporary name and is renamed only after its sha256 and row count match the manifest, so a crash
or a bad object never leaves a file that looks cached. Ranks sharing a machine share the cache: a
file lock per shard lets one process download it while the others wait. A cached file is re-hashed
once per process before use; one that no longer verifies (disk damage, an edit) is downloaded again.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from components.common.storage import Store

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ShardChecksumError(ValueError):
    """A downloaded shard does not match the sha256 (or row count) its manifest promised."""


class DecodedShard:
    """One shard's token columns as flat numpy arrays + offsets: compact, and a row is two slices."""

    def __init__(self, path: Path):
        # ParquetFile.read skips the datasets layer read_table goes through: ~40 % faster on a shard.
        table = pq.ParquetFile(path).read(columns=["input_ids", "labels"], use_threads=False)
        self.columns = []
        for name in ("input_ids", "labels"):
            col = table.column(name).combine_chunks()
            # offsets index into .values (which ignores any slice offset), so the pair stays consistent.
            self.columns.append((np.asarray(col.values), np.asarray(col.offsets)))
        self.rows = table.num_rows

    def row(self, i: int) -> tuple[list[int], list[int]]:
        (src, src_off), (tgt, tgt_off) = self.columns
        return src[src_off[i]:src_off[i + 1]].tolist(), tgt[tgt_off[i]:tgt_off[i + 1]].tolist()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mismatch(path: Path, entry: dict) -> str | None:
    """Why the file at path is not the shard entry describes, or None when it is."""
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest} does not match the manifest's {entry['sha256']}"
    rows = pq.read_metadata(path).num_rows
    if rows != entry["rows"]:
        return f"{rows} rows, the manifest says {entry['rows']}"
    return None


class ShardCache:
    """fetch(entry) -> verified local file; read(entry) -> decoded shard (LRU); prefetch in background."""

    def __init__(self, store: Store, cache_dir: str | Path, max_decoded: int = 16, prefetch_threads: int = 2):
        self.store = store
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_decoded = max_decoded
        self.decoded: OrderedDict[str, DecodedShard] = OrderedDict()
        self.verified: set[str] = set()  # sha256s whose cached file was checked in this process
        self.downloads = 0
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._pool = ThreadPoolExecutor(prefetch_threads, thread_name_prefix="shard-prefetch") if prefetch_threads else None

    def hold_at_least(self, n: int) -> None:
        """Keep at least n decoded shards (a loader needs every shard of each stream's current block)."""
        self.max_decoded = max(self.max_decoded, n)

    def path_of(self, entry: dict) -> Path:
        if not SHA256_HEX.fullmatch(str(entry.get("sha256", ""))):
            raise ShardChecksumError(f"{entry.get('uri')}: the manifest's sha256 {entry.get('sha256')!r} is not a hex digest")
        return self.dir / f"{entry['sha256']}.parquet"

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def fetch(self, entry: dict) -> Path:
        """The verified local copy of a shard, downloading it if needed; ShardChecksumError names the URI."""
        path = self.path_of(entry)
        sha = entry["sha256"]
        if sha in self.verified:
            return path
        # One download per shard when prefetch and the reader (thread lock), or several ranks on
        # this machine (file lock), ask at once: the others wait, then find it cached.
        with self._lock(sha), open(self.dir / f".{sha}.lock", "a") as lock:
            if sha in self.verified:
                return path
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (path.exists() and mismatch(path, entry) is None):
                self._download(entry, path)
            self.verified.add(sha)
            return path

    def _download(self, entry: dict, path: Path) -> None:
        tmp = path.with_name(f".{entry['sha256']}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.store.get_file(entry["uri"], tmp)
            self.downloads += 1
            problem = mismatch(tmp, entry)
            if problem:
                raise ShardChecksumError(f"{entry['uri']}: {problem}")
            os.replace(tmp, path)  # atomic: readers see no file or the whole verified file
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, entry: dict) -> DecodedShard:
        sha = entry["sha256"]
        shard = self.decoded.get(sha)
        if shard is not None:
            self.decoded.move_to_end(sha)
            return shard
        shard = DecodedShard(self.fetch(entry))
        self.decoded[sha] = shard
        while len(self.decoded) > self.max_decoded:
            self.decoded.popitem(last=False)
        return shard

    def prefetch(self, entries: list[dict]) -> None:
        """Download these shards in the background. Errors are left for the reader's own fetch to raise."""
        if self._pool is None:
            return
        for entry in entries:
            if entry["sha256"] not in self.verified:
                self._pool.submit(self._quiet_fetch, entry)

    def _quiet_fetch(self, entry: dict) -> None:
        try:
            self.fetch(entry)
        except Exception:  # noqa: BLE001 - the foreground fetch of this shard reports it with its URI
            pass

    def close(self) -> None:
        """Wait for running prefetches; later reads still work, without prefetching."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
