"""New data starts a run, once per batch: what `mixtune submit --if-new-data` (cluster) and `mixtune watch`
(embedded default) share.

A batch is the settled listing of the watched sources (`cluster.trigger.watch_sources`), or with
`new_files_only` just the files no earlier claim holds. Its fingerprint (every object's name, size and
ETag) names a claim object `<storage root>/<claims_prefix>/<fingerprint>.json`, created with a
conditional put (S3 `If-None-Match: *`): of several triggers racing for one batch exactly one wins.
The claim records the batch's file names, so with `new_files_only` the next batch leaves them out, and
`batch_config` narrows each watched source to exactly the batch's files.
"""
from __future__ import annotations

import glob
import hashlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from components.common.config import MixtuneConfig
from components.common.storage import Store, join
from components.ingest.catalog import SourceObject, list_objects


class TriggerError(RuntimeError):
    """New data could not be listed, claimed or started; the message says why and what to do."""


@dataclass
class Batch:
    files: list[SourceObject]  # sorted by name, each once
    fingerprint: str
    claim_uri: str
    by_source: dict[int, list[str]]  # index of every watched source in data.sources -> its files in the batch
    new_files_only: bool = False


Listing = dict[int, list[SourceObject]]  # watched source index -> what it lists

# A claim's files never change: its key is the fingerprint of those files. Cached so a watcher polling
# every few seconds does not re-read every claim ever made.
_claimed_files: dict[str, frozenset[str]] = {}


# -- what is in the bucket -----------------------------------------------------------------------


def _list(spec, store: Store) -> list[SourceObject]:
    try:
        return list_objects(spec, store)
    except FileNotFoundError as e:
        raise TriggerError(f"cannot list the sources: {e}") from None


def source_listing(cfg: MixtuneConfig, store: Store) -> list[SourceObject]:
    """Every object the config's sources name, sorted (what ingest would read)."""
    if not cfg.data.sources:
        raise TriggerError("data.sources is empty: the trigger needs the chat-log prefix to watch")
    return sorted({o for spec in cfg.data.sources for o in _list(spec, store)}, key=lambda o: o.name)


def watched(cfg: MixtuneConfig) -> list[int]:
    """Indices in data.sources of the sources whose files start a run."""
    names = cfg.cluster.trigger.watch_sources
    return [i for i, s in enumerate(cfg.data.sources) if names is None or s.name in names]


def watched_listing(cfg: MixtuneConfig, store: Store) -> Listing:
    """index -> the objects of each watched source. One of several watched prefixes with nothing in it yet
    lists as empty (uploads may land in the others); all of them empty is an error the watcher reports."""
    if not cfg.data.sources:
        raise TriggerError("data.sources is empty: the trigger needs the chat-log prefix to watch")
    listing, empty = {}, []
    for i in watched(cfg):
        try:
            listing[i] = list_objects(cfg.data.sources[i], store)
        except FileNotFoundError as e:
            listing[i] = []
            empty.append(str(e))
    if empty and not any(listing.values()):
        raise TriggerError(f"cannot list the sources: {empty[0]}")
    return listing


def fingerprint(objects: list[SourceObject]) -> str:
    lines = "".join(f"{o.name}\t{o.size}\t{o.etag}\n" for o in objects)
    return hashlib.sha256(lines.encode()).hexdigest()


T = TypeVar("T")


def settled_listing(list_fn: Callable[[], T], settle_seconds: float, max_seconds: float,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                    first: T | None = None) -> T:
    """The listing once two reads `settle_seconds` apart agree: uploads still arriving join this batch.
    `first` is a listing just read (the first read is skipped)."""
    listing = list_fn() if first is None else first
    if settle_seconds <= 0:
        return listing
    deadline = clock() + max_seconds
    while True:
        sleep(settle_seconds)
        again = list_fn()
        if again == listing:
            return listing
        listing = again
        if clock() >= deadline:
            raise TriggerError(f"sources still changing after {max_seconds:g} s; the next event will try again")


def claims_root(cfg: MixtuneConfig, store: Store) -> str:
    return join(store.root, cfg.cluster.trigger.claims_prefix)


def claim_uri(cfg: MixtuneConfig, store: Store, fp: str) -> str:
    return join(claims_root(cfg, store), f"{fp}.json")


def run_name_for(fp: str | None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"mixtune-{stamp}-{fp[:8]}" if fp else f"mixtune-{stamp}"


# -- batches -------------------------------------------------------------------------------------


def claimed_files(store: Store, root: str, skip: str | None = None) -> dict[str, frozenset[str]]:
    """{claim uri: the file names it holds} for every claim under root (but `skip`). A claim of an
    older release records only a count: it holds no names."""
    out = {}
    for uri, _, _ in store.list_meta(root):
        if uri == skip or not uri.endswith(".json"):
            continue
        if uri not in _claimed_files:
            try:
                files = store.get_json(uri).get("files")
            except FileNotFoundError:  # released meanwhile
                continue
            except (ValueError, AttributeError):
                files = None
            if not isinstance(files, list):
                out[uri] = frozenset()
                continue
            _claimed_files[uri] = frozenset(files)
        out[uri] = _claimed_files[uri]
    return out


def _ambiguous_key(name: str, listed: list[SourceObject]) -> bool:
    """An S3 key that is also a prefix of other keys: a source naming it would list those instead."""
    return name.startswith("s3://") and any(o.name.startswith(name + "/") for o in listed)


def make_batch(cfg: MixtuneConfig, store: Store, listing: Listing) -> Batch | None:
    """The batch in this listing: all of it, or with new_files_only the files no claim holds; None if empty."""
    new_only = cfg.cluster.trigger.new_files_only
    held = frozenset().union(*claimed_files(store, claims_root(cfg, store)).values()) if new_only else frozenset()
    by_source = {i: sorted(o.name for o in objs if o.name not in held) for i, objs in listing.items()}
    files = sorted({o for objs in listing.values() for o in objs if o.name not in held}, key=lambda o: o.name)
    if not files:
        return None
    if new_only:
        for i, names in by_source.items():
            bad = [n for n in names if _ambiguous_key(n, listing[i])]
            if bad:
                raise TriggerError(f"data.sources[{i}]: {bad[0]} is an object and also a prefix of other "
                                   "objects, so a run cannot read it alone (new_files_only); rename one of them")
    fp = fingerprint(files)
    return Batch(files, fp, claim_uri(cfg, store, fp), by_source, new_only)


def candidate_batch(cfg: MixtuneConfig, store: Store, sleep: Callable[[float], None] = time.sleep,
                    first: Listing | None = None) -> Batch | None:
    """The batch once the watched sources settle, claimed or not (the cluster path reports who holds it)."""
    t = cfg.cluster.trigger
    listing = settled_listing(lambda: watched_listing(cfg, store), t.settle_seconds, t.settle_max_seconds,
                              sleep, first=first)
    return make_batch(cfg, store, listing)


def next_batch(cfg: MixtuneConfig, store: Store, sleep: Callable[[float], None] = time.sleep) -> Batch | None:
    """The settled batch of new data nobody has claimed, or None. A listing with nothing new returns at
    once: the settle wait is spent only when something new is there."""
    first = watched_listing(cfg, store)
    quick = make_batch(cfg, store, first)
    if quick is None or store.exists(quick.claim_uri):
        return None
    batch = candidate_batch(cfg, store, sleep, first=first)
    return None if batch is None or store.exists(batch.claim_uri) else batch


# -- claims --------------------------------------------------------------------------------------


def _claim_body(batch: Batch) -> dict:
    return {"fingerprint": batch.fingerprint, "files": [o.name for o in batch.files]}


def claim(store: Store, batch: Batch, extra: dict | None = None) -> bool:
    """Claim the batch; False when another trigger holds it. With new_files_only two triggers may list
    different batches sharing files (one listed before an upload, one after): each checks after its
    conditional put, and the one that sees another claim on its files withdraws, so no file is claimed
    twice (if both withdraw, the next look tries again)."""
    body = {**_claim_body(batch), "claimed_at": time.time(), "by": socket.gethostname(), **(extra or {})}
    if not store.put_if_absent(batch.claim_uri, json.dumps(body).encode()):
        return False
    if batch.new_files_only:
        mine = {o.name for o in batch.files}
        root = batch.claim_uri.rsplit("/", 1)[0]
        if any(mine & files for files in claimed_files(store, root, skip=batch.claim_uri).values()):
            release(store, batch)
            return False
    return True


def held_claim(store: Store, batch: Batch) -> dict:
    """The claim's body, or {} when it is gone (or unreadable)."""
    try:
        return store.get_json(batch.claim_uri)
    except (FileNotFoundError, ValueError):
        return {}


def update_claim(store: Store, batch: Batch, fields: dict) -> dict:
    """Record what became of the batch (run name and id, status, result) on its claim."""
    body = {**_claim_body(batch), **held_claim(store, batch), **fields}
    store.put_json(batch.claim_uri, body)
    return body


def release(store: Store, batch: Batch) -> None:
    """Give the batch back: the next trigger may start it (only when its run never started)."""
    store.delete(batch.claim_uri)
    _claimed_files.pop(batch.claim_uri, None)


# -- the run's config ----------------------------------------------------------------------------


def _exact_path(name: str) -> str:
    # A local name with glob characters is escaped so it matches itself only; an S3 key is a key.
    return name if name.startswith("s3://") or not glob.has_magic(name) else glob.escape(name)


def batch_config(cfg: MixtuneConfig, batch: Batch) -> MixtuneConfig:
    """The config the batch's run uses. With new_files_only each watched source becomes one source per
    file of the batch (same name, format and settings, so record ids and per-source slices do not
    change; a watched source with no new file is left out); the other sources are read in full."""
    if not cfg.cluster.trigger.new_files_only:
        return cfg
    sources = []
    for i, spec in enumerate(cfg.data.sources):
        if i not in batch.by_source:
            sources.append(spec)
            continue
        sources += [spec.model_copy(update={"path": _exact_path(n)}) for n in batch.by_source[i]]
    t = cfg.cluster.trigger
    if t.watch_sources is not None:  # a left-out source's name must leave too: steps re-validate the config
        t = t.model_copy(update={"watch_sources": [n for n in t.watch_sources if n in {s.name for s in sources}]})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": sources}),
                                  "cluster": cfg.cluster.model_copy(update={"trigger": t})})
