import json

import pytest

from components.common.config import SourceConfig
from components.common.schemas import read_rows
from components.common.storage import join
from components.ingest.core import ingest_rows, run_ingest, split_of
from components.ingest.formats import RowError, parse_chatlog, parse_dialogsum
from pipelines.sample_data import generate, write_jsonl

GOOD = {"conversation_id": "c1", "summary": "Customer asks; agent answers.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def _line(**changes) -> str:
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not ...})


BAD_ROWS = {
    "invalid JSON": b"{not json",
    "expected a JSON object": b"[1, 2]",
    "missing id": _line(conversation_id=...).encode(),
    "missing field 'summary'": _line(summary=...).encode(),
    "field 'summary' is empty": _line(summary="   ").encode(),
    "unknown speaker role": _line(messages=[{"role": "robot", "content": "x"}, {"role": "agent", "content": "y"}]).encode(),
    "message 1 has empty content": _line(messages=[{"role": "user", "content": "x"}, {"role": "agent", "content": ""}]).encode(),
    "fewer than 2": _line(messages=[{"role": "user", "content": "only me"}]).encode(),
    "not valid UTF-8": b'{"conversation_id": "\xff\xfe"}',
    "NUL bytes": _line(summary="a\x00b").encode(),
    "over 200": _line(messages=[{"role": "user", "content": "x" * 300}, {"role": "agent", "content": "y"}]).encode(),
}


def test_parsers_normalise_roles_and_dialogsum():
    rec_id, dialogue, target, turns = parse_chatlog(_line())
    assert (rec_id, dialogue, turns) == ("c1", "Customer: Hi\nAgent: Hello", 2)
    row = {"fname": "test_1", "dialogue": "#Person1#: Hi\n#Person2#: Hey", "summary1": "They greet."}
    assert parse_dialogsum(json.dumps(row)) == ("test_1", "#Person1#: Hi\n#Person2#: Hey", "They greet.", 2)
    with pytest.raises(RowError, match="missing field 'dialogue'"):
        parse_dialogsum(json.dumps({"fname": "x", "summary": "s"}))


def test_every_bad_row_is_quarantined_with_file_line_and_reason(tiny_config):
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"max_dialogue_chars": 200})})
    lines = [_line(conversation_id="ok-1").encode()] + list(BAD_ROWS.values()) + [
        _line(conversation_id="ok-1").encode(),  # duplicate id
        b"", b"   ",  # blank lines are not rows
    ]
    spec = SourceConfig(path="x.jsonl", name="team")
    records, quarantine, counts = ingest_rows(cfg, [(spec, "x.jsonl", b"\n".join(lines))])
    assert counts == {"read": 13, "kept": 1, "quarantined": 11, "duplicates": 1}
    assert counts["read"] == counts["kept"] + counts["quarantined"] + counts["duplicates"]
    assert [r["id"] for r in records] == ["team:ok-1"]
    by_line = {q["line"]: q for q in quarantine}
    for lineno, (expected, raw) in enumerate(BAD_ROWS.items(), start=2):
        assert expected in by_line[lineno]["reason"], (expected, by_line[lineno])
        assert by_line[lineno]["file"] == "x.jsonl"
        assert by_line[lineno]["raw"]  # the raw row is kept for a person to fix


def test_split_is_stable_and_near_the_fractions():
    ids = [f"src:{i}" for i in range(4000)]
    splits = [split_of(i, 0.1, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1, 0.1) for i in ids]
    assert 300 < splits.count("test") < 500 and 300 < splits.count("validation") < 500
    # Adding data never moves an existing id.
    assert [split_of(i, 0.1, 0.1) for i in ids[:100]] == splits[:100]


def test_run_ingest_writes_parquet_and_manifest(tiny_config, store, tmp_path):
    path = write_jsonl(generate(60, seed=2), tmp_path / "chats.jsonl")
    with path.open("a") as fh:
        fh.write("{broken\n")
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"sources": [SourceConfig(path=str(tmp_path / "*.jsonl"))]})})
    root = join(store.root, "runs", "r1")
    result = run_ingest(cfg, root, "r1")
    assert result.counts == {"read": 61, "kept": 60, "quarantined": 1, "duplicates": 0}
    assert sum(result.split_rows.values()) == 60
    manifest = store.get_json(join(root, "ingest", "manifest.json"))
    assert manifest["dataset_version"] == result.dataset_version
    rows = read_rows(store, join(root, "ingest", "train.parquet"))
    assert rows and all(r["split"] == "train" and r["id"].startswith("chats:") for r in rows)
    q = read_rows(store, join(root, "ingest", "quarantine.parquet"))
    assert q == [{"file": str(path), "line": 61, "reason": q[0]["reason"], "raw": "{broken"}]
    # Same content, same version: the dataset is content-addressed.
    assert run_ingest(cfg, join(store.root, "runs", "r2"), "r2").dataset_version == result.dataset_version


def test_s3_source_and_missing_file(tiny_config, store, tmp_path):
    path = write_jsonl(generate(20, seed=5), tmp_path / "c.jsonl")
    store.put_file(join(store.root, "incoming", "c.jsonl"), path)
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"sources": [SourceConfig(path=join(store.root, "incoming"))]})})
    assert run_ingest(cfg, join(store.root, "runs", "s3"), "s3").counts["kept"] == 20
    missing = cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"sources": [SourceConfig(path=str(tmp_path / "nope-*.jsonl"))]})})
    with pytest.raises(FileNotFoundError, match="nope-"):
        run_ingest(missing, join(store.root, "runs", "m"), "m")
