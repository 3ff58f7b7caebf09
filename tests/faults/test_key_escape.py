"""Object keys built from input never escape their prefix: a hostile name ("..", ".", "/", "\\", "%2e%2e",
NUL, unicode look-alikes, a leading "/") is refused with a ValueError or stays under the prefix it was
meant for. Covers storage.join (every key goes through it), run_root (pipeline_run), the ingest's keys
(source file names: never in a key), and shard keys (stream = task name from the template registry).
"""
from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.common.config import MixtuneConfig, SourceConfig, StorageConfig
from components.common.storage import S3Uri, join, run_root
from components.ingest.catalog import SourceObject, list_objects, part_uri, source_fingerprint
from components.ingest.core import write_dataset
from components.ingest.readers import UnreadableFileError
from components.shards.streams import shard_uri

PROFILE = dict(deadline=None, derandomize=True, database=None)
HOSTILE = ["..", ".", "/", "//", "\\", "..\\..\\x", "%2e%2e", "%2e%2e%2fother", "../other-run", "a/../../b",
           "./x", "x/.", "/abs", "a//b", "\x00", "a\x00b", "\u2025", "\uff0e\uff0e", "...", " ..", ".. ",
           "\u202eevil", "\u00e9\u2603", "runs", "", "\t", "\n", "~", "$HOME", "s3://other/x", "?x=1", "#f",
           "a%00b", "other-run/ingest", "C:\\x", "\\\\server\\share"]
names = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=16),
    st.lists(st.sampled_from(["..", ".", "", "a", "%2e", "\\", "\x00", "\u00e9", "runs"]), max_size=5).map("/".join),
)


def _segments_ok(key: str) -> bool:
    """No empty, '.' or '..' segment, no backslash or NUL, and resolving it as a path changes nothing."""
    segs = key.split("/")
    return (all(s and s not in (".", "..") and "\\" not in s and "\x00" not in s for s in segs)
            and posixpath.normpath(key) == key)


def _run(prop) -> tuple[Exception | None, str]:
    try:
        prop()
        return None, "0 crashes"
    except Exception as e:  # recorded as a failed row, then re-raised
        return e, f"failed: {type(e).__name__}"


# --- storage.join ---------------------------------------------------------------------------------
def test_join_stays_under_its_base_or_refuses(record):
    stats: Counter = Counter()

    @settings(max_examples=300, **PROFILE)
    @given(base=st.sampled_from(["s3://bkt/team", "s3://bkt", "s3://bkt/team/", "s3://bkt/a/runs/r1"]),
           parts=st.lists(names, max_size=4))
    def prop(base, parts):
        stats["cases"] += 1
        try:
            out = join(base, *parts)
        except ValueError as e:
            assert "unsafe key part" in str(e) and repr(base) in str(e), e
            stats["refused"] += 1
            return
        root = base.rstrip("/")
        if all(p == "" for p in parts):  # an empty prefix adds nothing
            assert out == root
            return
        assert out.startswith(root + "/"), (base, parts, out)
        tail = out[len(root) + 1:]
        assert _segments_ok(tail), (parts, out)
        assert tail.split("/") == [s for p in parts for s in p.split("/") if s]  # names kept as given
        assert S3Uri.parse(out).bucket == "bkt"

    failure, how = _run(prop)
    record("object key from hostile input: storage.join", "stays under its base or refused",
           f"{stats['cases']} part lists: {stats['refused']} refused, 0 escaped, {how}",
           failure is None)
    if failure:
        raise failure


@pytest.mark.parametrize("part", ["..", ".", "/", "//", "a/../b", "./x", "x/.", "a\\b", "a\x00b"])
def test_join_refuses_each_escape(part):
    with pytest.raises(ValueError, match="unsafe key part"):
        join("s3://bkt/team", "runs", part)


def test_join_keeps_ordinary_keys():
    assert join("s3://bkt", "") == "s3://bkt"  # Store.root with no prefix
    assert join("s3://bkt/team/", "runs/r1/", "ingest") == "s3://bkt/team/runs/r1/ingest"
    assert join("s3://bkt/team", "%2e%2e", "\u00e9 x") == "s3://bkt/team/%2e%2e/\u00e9 x"  # literal names


@settings(max_examples=200, **PROFILE)
@given(rest=names, scheme=st.sampled_from(["s3://", "s3:/", "S3://", "", "file://"]))
def test_s3uri_parse_is_exact_or_refuses(rest, scheme):
    """A URI names exactly one bucket and key, and prints back as given; anything else is a ValueError."""
    text = scheme + rest
    try:
        u = S3Uri.parse(text)
    except ValueError:
        return
    assert text.startswith("s3://") and u.bucket and "/" not in u.bucket
    assert str(u) == text or (u.key == "" and str(u) == text + "/")  # "s3://b" is the bucket's root


# --- run_root: pipeline_run ------------------------------------------------------------------------
def test_run_root_gives_each_run_its_own_folder_or_refuses(record):
    cfg = StorageConfig(bucket="bkt", prefix="team")
    stats: Counter = Counter()

    @settings(max_examples=300, **PROFILE)
    @given(a=names, b=names)
    def prop(a, b):
        stats["cases"] += 1
        roots = {}
        for name in (a, b):
            try:
                roots[name] = run_root(cfg, name)
            except ValueError as e:
                assert "cannot name an artifact folder" in str(e) or "unsafe key part" in str(e), e
                stats["refused"] += 1
                continue
            assert roots[name] == f"s3://bkt/team/runs/{name}", (name, roots[name])  # one segment: the name
            assert _segments_ok(S3Uri.parse(roots[name]).key)
        if a != b and len(roots) == 2:  # two runs never share a folder, nor nest one in the other
            assert not (roots[a] + "/").startswith(roots[b] + "/") and not (roots[b] + "/").startswith(roots[a] + "/")

    failure, how = _run(prop)
    for hostile in ("../other-run", "other-run/ingest", ".", "..", "/", "", "a\\..\\b", "a\x00"):
        with pytest.raises(ValueError):
            run_root(cfg, hostile)
    record("pipeline_run from input: run_root", "its own folder under runs/ or refused",
           f"{stats['cases']} name pairs: {stats['refused']} names refused, 0 escaped or shared, {how}",
           failure is None)
    if failure:
        raise failure


# --- ingest: source file names never enter a key ---------------------------------------------------
def test_ingest_keys_do_not_depend_on_source_names(record):
    """Parts are content-addressed and catalogs keyed by a fingerprint: whatever the source is called,
    the keys are <root>/ingest/parts/<hex>/<hex>.parquet and <root>/ingest/catalog/<hex>.json."""
    store = SimpleNamespace(root="s3://bkt/team")
    cfg = MixtuneConfig()
    stats: Counter = Counter()

    @settings(max_examples=200, **PROFILE)
    @given(name=names, size=st.integers(0, 2**40), etag=st.text(max_size=20), source=names)
    def prop(name, size, etag, source):
        stats["cases"] += 1
        fp = source_fingerprint(SourceConfig(path=name or "x", name=source or None), cfg)
        assert re.fullmatch(r"[0-9a-f]{24}", fp)
        uri = part_uri(store, fp, SourceObject(name, size, etag))
        assert re.fullmatch(r"s3://bkt/team/ingest/parts/[0-9a-f]{24}/[0-9a-f]{32}\.parquet", uri), uri

    failure, how = _run(prop)
    record("ingest part/catalog keys from hostile source names", "content-addressed under <root>/ingest",
           f"{stats['cases']} names: 0 in a key, {how}", failure is None)
    if failure:
        raise failure


CHAT = {"summary": "Customer reports a late parcel.", "messages": [
    {"role": "user", "content": "my parcel is late"}, {"role": "assistant", "content": "I will check the order."}]}
S3_NAMES = ["%2e%2e/%2e%2e/escape.jsonl", "..x.jsonl", "...jsonl", "a b/\u00e9\u2603.jsonl", "\u202egnp.jsonl",
            "-rf.jsonl", "~/x.jsonl", "other-run/ingest/report.jsonl"]
LOCAL_NAMES = ["..%2f..%2fescape.jsonl", "...jsonl", ".hidden.jsonl", "\u202egnp.jsonl", "a\\..\\b.jsonl",
               "$HOME.jsonl", "-n.jsonl"]


def _lines(tag: str, n: int = 3) -> bytes:
    rows = [json.dumps({"conversation_id": f"{tag}-{i}", **CHAT, "summary": f"{tag} {i}: parcel {i} is late."})
            for i in range(n)]
    return "\n".join(rows).encode() + b"\n{bad\n"


def test_ingest_of_hostile_file_names_writes_only_under_its_prefixes(tiny_config, store, tmp_path, record):
    sources = []
    for i, name in enumerate(S3_NAMES):
        key = f"{store.cfg.prefix}/incoming/hostile/{name}"
        store.client.put_object(Bucket=store.cfg.bucket, Key=key, Body=_lines(f"s{i}"))
    sources.append(SourceConfig(path=join(store.root, "incoming", "hostile"), name="s3src"))
    (tmp_path / "sub").mkdir()
    for i, name in enumerate(LOCAL_NAMES):
        (tmp_path / name).write_bytes(_lines(f"l{i}"))
        sources.append(SourceConfig(path=str(tmp_path / "sub" / ".." / name)))  # a path with '..' is fine locally
    data = tiny_config.data.model_copy(update={"sources": sources, "workers": 1})
    cfg = tiny_config.model_copy(update={"data": data})

    bucket = f"s3://{store.cfg.bucket}"
    before = {u for u, _ in store.list(bucket)}
    artifact_root = run_root(store.cfg, "hostile-names")
    result = write_dataset(cfg, artifact_root, store)
    written = sorted({u for u, _ in store.list(bucket)} - before)

    root = re.escape(store.root)
    allowed = re.compile(rf"{root}/(ingest/parts/[0-9a-f]{{24}}/[0-9a-f]{{32}}\.parquet"
                         rf"|ingest/catalog/[0-9a-f]{{24}}\.json"
                         rf"|datasets/[0-9a-f]{{16}}/(train\.parquet|validation\.parquet|test\.parquet|manifest\.json)"
                         rf"|runs/hostile-names/ingest/(quarantine\.parquet|report\.json))")
    escaped = [u for u in written if not allowed.fullmatch(u)]
    files = len(result.files_read)
    assert files == len(S3_NAMES) + len(LOCAL_NAMES)
    assert result.counts["rows_quarantined"] == files  # each file's "{bad" row, named by its file
    record("ingest of source files with hostile names", "keys stay under the test prefix",
           f"{files} files: {len(written)} keys written, {len(escaped)} outside their prefix", not escaped)
    assert not escaped, escaped


def test_a_local_file_name_that_is_not_utf8_is_refused_naming_it(tmp_path, record):
    path = bytes(tmp_path) + b"/chats-\xff.jsonl"
    with open(path, "wb") as f:
        f.write(_lines("x"))
    with pytest.raises(UnreadableFileError) as e:
        list_objects(SourceConfig(path=str(tmp_path / "*.jsonl")), None)
    message = str(e.value)
    record("source file name not UTF-8", "clear error naming the file", message.replace(str(tmp_path), "<tmp>")[:70],
           message.startswith(str(tmp_path / "chats-\ufffd.jsonl")))


# --- shards: the stream (a task name from a user's template registry) ------------------------------
def test_shard_keys_stay_under_their_split_or_are_refused(record):
    out = "s3://bkt/team/runs/r1/shards"
    stats: Counter = Counter()

    @settings(max_examples=300, **PROFILE)
    @given(stream=names, split=st.sampled_from(["train", "validation", "test"]), index=st.integers(0, 10**6))
    def prop(stream, split, index):
        stats["cases"] += 1
        try:
            uri = shard_uri(out, split, stream, index)
        except ValueError as e:
            assert "unsafe key part" in str(e)
            stats["refused"] += 1
            return
        assert uri.startswith(f"{out}/{split}/") and uri.endswith(f"/shard-{index:05d}.parquet"), uri
        assert _segments_ok(S3Uri.parse(uri).key), uri

    failure, how = _run(prop)
    record("shard key from a hostile stream/task name", "stays under <shards>/<split>/ or refused",
           f"{stats['cases']} names: {stats['refused']} refused, 0 escaped, {how}", failure is None)
    if failure:
        raise failure


def test_task_names_that_would_share_a_shard_folder_are_refused(record):
    """stream_dir maps '/' to '__' (a replay stream is "replay/<task>"), so the registry refuses task
    names with "__", and any name that is not a plain identifier, before anything is written."""
    from components.templates.registry import RegistryError, parse_registry, read_registry_text

    raw = yaml.safe_load(read_registry_text()[0])
    task = next(iter(parse_registry(raw)))
    refused = []
    for name in ("replay__" + task, "", "a/b", "../x", "_x", "x" * 65):
        try:
            parse_registry({**raw, name: raw[task]})
            refused.append(False)
        except RegistryError as e:
            refused.append("a task name is letters" in str(e))
    record("task name that would share a shard folder", "refused by the registry", f"{sum(refused)}/6 refused",
           refused == [True] * 6)
