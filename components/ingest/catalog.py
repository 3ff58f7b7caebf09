"""Incremental ingest: a catalog of the source objects already parsed, and their parsed parts.

Each source object (an S3 object or a local file) is parsed once into a *part* (its records and its
quarantined rows, already redacted) stored in S3 under a content-addressed key. The catalog maps the
object's name to its size, ETag and part. A re-run lists the sources, and reads only objects whose
(size, ETag) is not in the catalog; the others come back from their parts without touching the source.

The catalog is keyed by a fingerprint of the source (its path) and everything that changes what a parse produces (the source's
format and mapping, the limits, the PII settings, PARSER_VERSION): change any of them and every object
is parsed again, never mixed with parts made under other rules.
"""
from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from components.common.config import MixtuneConfig, SourceConfig
from components.common.storage import Store, join
from components.ingest.readers import UnreadableFileError

PARSER_VERSION = "4"  # bump when parsing, redaction or dedup keys change meaning


@dataclass(frozen=True)
class SourceObject:
    name: str  # s3:// URI or local path
    size: int
    etag: str  # the S3 ETag; for a local file "<size>-<mtime_ns>" plays the same role


def list_objects(spec: SourceConfig, store: Store) -> list[SourceObject]:
    """The objects a source names: an s3:// key or prefix, a local path, or a glob; sorted."""
    if spec.path.startswith("s3://"):
        listed = store.list_meta(spec.path)
        if not listed:  # not a prefix: maybe a single key
            head = store.head(spec.path)
            listed = [(spec.path, *head)] if head else []
        if not listed:
            raise FileNotFoundError(f"source {spec.path!r}: no object at this key or prefix")
        objects = [SourceObject(u, size, etag) for u, size, etag in listed]
    else:
        paths = sorted(glob.glob(spec.path, recursive=True)) if glob.has_magic(spec.path) else [spec.path]
        files = [Path(p) for p in paths if Path(p).is_file()]
        if not files:
            raise FileNotFoundError(f"source {spec.path!r}: no readable file matches")
        objects = []
        for f in files:
            if not str(f).isascii():
                try:  # a name with bytes that are not UTF-8 cannot be stored as the rows' `file`
                    str(f).encode("utf-8")
                except UnicodeEncodeError:
                    shown = str(f).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    raise UnreadableFileError(f"{shown}: the file name is not valid UTF-8; rename the file") from None
            st = f.stat()
            objects.append(SourceObject(str(f), st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
    if spec.format == "codexglue_java_cs":
        objects = _fold_partners(objects, spec, store)
    return sorted(objects, key=lambda o: o.name)


def _fold_partners(objects: list[SourceObject], spec: SourceConfig, store: Store) -> list[SourceObject]:
    """Code pairs: the .java files name the pairs and their .cs partners are read with them, so a
    partner's size and ETag join the .java object's: a change to either file re-reads the pair."""
    out = []
    for o in (o for o in objects if o.name.endswith(".java")):
        partner = o.name[: -len(".java")] + ".cs"
        if partner.startswith("s3://"):
            meta = store.head(partner)
        else:
            st = Path(partner).stat() if Path(partner).is_file() else None
            meta = (st.st_size, f"{st.st_size}-{st.st_mtime_ns}") if st else None
        out.append(SourceObject(o.name, o.size, f"{o.etag}+{meta[1] if meta else 'missing'}"))
    return out


def read_object(name: str, store: Store) -> bytes:
    if name.startswith("s3://"):
        return store.get_bytes(name)
    try:
        return Path(name).read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"{name}: cannot read: {e.strerror}") from None


def sibling_name(name: str, file_name: str) -> str:
    """Another file in the same folder (or S3 prefix) as `name`."""
    return name.rsplit("/", 1)[0] + "/" + file_name if "/" in name else file_name


def source_fingerprint(spec: SourceConfig, cfg: MixtuneConfig) -> str:
    d = cfg.data
    rules = {
        "parser": PARSER_VERSION,
        "source": spec.model_dump(mode="json"),
        "limits": [d.max_row_bytes, d.max_field_chars, d.max_target_chars, d.min_turns, d.min_speakers,
                   d.summary_support.quarantine_below],
        "pii": d.pii.model_dump(mode="json") if spec.redact_pii else None,
        "dedup": [d.dedup.num_perm, d.dedup.shingle_words, d.dedup.near],
    }
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:24]


def part_uri(store: Store, fingerprint: str, obj: SourceObject) -> str:
    """Content-addressed by what identifies the object's bytes; immutable once written."""
    digest = hashlib.sha256(f"{obj.name}|{obj.size}|{obj.etag}".encode()).hexdigest()[:32]
    return join(store.root, "ingest", "parts", fingerprint, f"{digest}.parquet")


class Catalog:
    """{object name: {size, etag, part, counts}} for one source fingerprint, stored as JSON in S3."""

    def __init__(self, store: Store, fingerprint: str):
        self.store = store
        self.fingerprint = fingerprint
        self.uri = join(store.root, "ingest", "catalog", f"{fingerprint}.json")
        self.entries: dict[str, dict] = {}
        if store.exists(self.uri):
            self.entries = store.get_json(self.uri)["objects"]

    def lookup(self, obj: SourceObject) -> dict | None:
        """The entry of an unchanged object whose part still exists, else None."""
        e = self.entries.get(obj.name)
        if e and e["size"] == obj.size and e["etag"] == obj.etag and self.store.exists(e["part"]):
            return e
        return None

    def record(self, obj: SourceObject, part: str, counts: dict) -> None:
        self.entries[obj.name] = {**asdict(obj), "part": part, "counts": counts}

    def save(self) -> None:
        # Written after the parts it points to, so an interrupted run leaves no dangling entry. It is a
        # cache shared by runs: merge what a concurrent run saved meanwhile (a lost entry costs a reparse).
        if self.store.exists(self.uri):
            self.entries = {**self.store.get_json(self.uri)["objects"], **self.entries}
        self.store.put_json(self.uri, {"fingerprint": self.fingerprint, "objects": self.entries})
