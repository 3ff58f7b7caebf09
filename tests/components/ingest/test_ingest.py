"""Ingest core on the real S3 server: counts, incremental reads, split stability, PII, dedup, versions."""
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.common.config import FieldMapping, SourceConfig
from components.common.schemas import read_records, read_rows
from components.common.storage import join
from components.ingest.core import run_ingest, split_of, write_dataset
from pipelines.sample_data import generate

EMAIL, PHONE = "jane.doe+orders@example.org", "+1 415-555-0132"


def _chat(cid: str, text: str = "my parcel is late", summary: str | None = None) -> str:
    summary = summary or f"Customer reports: {text}."  # a summary of this chat (ingest quarantines others)
    return json.dumps({"conversation_id": cid, "summary": summary, "messages": [
        {"role": "user", "content": text}, {"role": "assistant", "content": "Sorry, I will check the order now."}]})


def _cfg(cfg, *sources, **data):
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": list(sources), **data})})


def _put(store, key: str, lines: list[str]) -> str:
    uri = join(store.root, "incoming", key)
    store.put_bytes(uri, ("\n".join(lines) + "\n").encode())
    return uri


def test_every_row_is_kept_quarantined_or_a_duplicate(tiny_config, store):
    lines = [_chat(f"c{i}", text=f"order {i}: the blue kettle arrived broken, lid {i} cracked") for i in range(6)]
    lines += [
        "{not json",
        _chat("c0"),  # the same id again
        _chat("z-copy", text="ORDER 1:  the blue kettle arrived broken, lid 1 cracked!!"),  # exact after normalising
        json.dumps({"conversation_id": "q", "summary": "", "messages": []}),
    ]
    uri = _put(store, "a/export.jsonl", lines)
    result = write_dataset(_cfg(tiny_config, SourceConfig(path=uri, name="team")), join(store.root, "runs", "r"), store)
    c = result.counts
    assert c["rows_read"] == 10 and c["rows_kept"] == 6 and c["rows_quarantined"] == 2 and c["rows_duplicate"] == 2
    assert c["rows_read"] == c["rows_kept"] + c["rows_quarantined"] + c["rows_duplicate"]
    assert c["duplicates_id"] == 1 and c["duplicates_exact"] == 1
    q = read_rows(store, join(result.report_uri, "quarantine.parquet"))
    assert [(r["file"], r["line"]) for r in q] == [(uri, 7), (uri, 10)]
    assert q[0]["reason"].startswith("invalid JSON") and q[0]["raw"] == "{not json"
    kept = {r["id"] for s in ("train", "validation", "test") for r in read_records(store, join(result.records_uri, f"{s}.parquet"))}
    assert "team:z-copy" not in kept and "team:c1" in kept  # the kept copy is the smallest id


def test_incremental_ingest_reads_only_new_objects(tiny_config, store):
    _put(store, "chats/day1.jsonl", [_chat(f"d1-{i}", text=f"refund request number {i} for the lamp") for i in range(30)])
    _put(store, "chats/day2.jsonl", [_chat(f"d2-{i}", text=f"password reset {i} does not arrive by mail") for i in range(30)])
    cfg = _cfg(tiny_config, SourceConfig(path=join(store.root, "incoming", "chats"), name="chats"))
    first = write_dataset(cfg, join(store.root, "runs", "1"), store)
    assert len(first.files_read) == 2 and first.files_reused == []

    new = _put(store, "chats/day3.jsonl", [_chat(f"d3-{i}", text=f"invoice {i} shows the wrong address") for i in range(30)])
    second = write_dataset(cfg, join(store.root, "runs", "2"), store)
    assert second.files_read == [new] and len(second.files_reused) == 2
    assert second.counts["records_kept"] == 90 and second.dataset_version != first.dataset_version

    # Nothing new: nothing read, same content-addressed version, and that version is not rewritten.
    manifest = join(second.records_uri, "manifest.json")
    before = store.head(manifest)
    third = write_dataset(cfg, join(store.root, "runs", "3"), store)
    assert third.files_read == [] and third.dataset_version == second.dataset_version
    assert store.head(manifest) == before

    # A changed object (new ETag) is read again.
    _put(store, "chats/day1.jsonl", [_chat(f"d1-{i}", text=f"refund request number {i} for the lamp") for i in range(31)])
    assert write_dataset(cfg, join(store.root, "runs", "4"), store).files_read == [join(store.root, "incoming", "chats", "day1.jsonl")]


def test_split_never_changes_when_data_arrives(tiny_config, store):
    chats = generate(80, seed=3)
    uri1 = _put(store, "s/a.jsonl", [json.dumps(c) for c in chats[:40]])
    cfg = _cfg(tiny_config, SourceConfig(path=join(store.root, "incoming", "s"), name="s"))
    splits = lambda r: {x["id"]: s for s in ("train", "validation", "test")  # noqa: E731
                        for x in read_records(store, join(r.records_uri, f"{s}.parquet"))}
    before = splits(write_dataset(cfg, join(store.root, "runs", "a"), store))
    _put(store, "s/b.jsonl", [json.dumps(c) for c in chats[40:]])
    after = splits(write_dataset(cfg, join(store.root, "runs", "b"), store))
    assert uri1 and len(after) > len(before) and all(after[i] == s for i, s in before.items())
    assert all(split_of(i, cfg.data.validation_fraction, cfg.data.test_fraction) == s for i, s in after.items())


def test_pii_is_redacted_before_anything_is_stored(tiny_config, store):
    lines = [_chat(f"p{i}", text=f"reach me at {EMAIL} or {PHONE}, ticket {i}") for i in range(5)]
    lines.append(json.dumps({"conversation_id": "bad", "summary": f"mail {EMAIL}"}))  # quarantined, still redacted
    source = _put(store, "pii/export.jsonl", lines)
    result = write_dataset(_cfg(tiny_config, SourceConfig(path=source)), join(store.root, "runs", "p"), store)
    assert result.pii["email"] >= 5 and result.pii["phone"] >= 5
    written = [u for u, _ in store.list(store.root) if "/incoming/" not in u]
    assert any(u.endswith("quarantine.parquet") for u in written)
    for uri in written:
        if uri.endswith(".parquet"):
            text = json.dumps(read_rows(store, uri), default=str)
        else:
            text = store.get_bytes(uri).decode("utf-8", "replace")
        assert EMAIL not in text and "555-0132" not in text, uri
    record = read_records(store, join(result.records_uri, "train.parquet"))[0]
    assert "<EMAIL>" in record["fields"]["dialogue"] and "<PHONE>" in record["fields"]["dialogue"]


def test_sources_of_several_formats_and_task_limits(tiny_config, store, tmp_path):
    (tmp_path / "notes.json").write_text(json.dumps({"export": {"items": [
        {"ticket": {"id": i}, "thread": [{"from": "client", "body": f"<p>My <b>router</b> {i} drops wifi</p>"},
                                         {"from": "agent", "body": "Please update the firmware&nbsp;now."}],
         "agent_note": f"Router {i} drops wifi; advised a firmware update."} for i in range(8)]}}))
    (tmp_path / "dialogsum.jsonl").write_text("\n".join(json.dumps(
        {"fname": f"train_{i}", "dialogue": f"#Person1#: Is gate {i} open?\n#Person2#: Yes, since noon.",
         "summary": f"Gate {i} is open.", "topic": "airport"}) for i in range(8)))
    mapping = FieldMapping(id="ticket.id", messages="thread", speaker="from", text="body", html=True,
                           speakers={"client": "Customer", "agent": "Agent"}, fields={"summary": "agent_note"})
    cfg = _cfg(tiny_config,
               SourceConfig(path=str(tmp_path / "notes.json"), format="json", records_path="export.items",
                            mapping=mapping, name="helpdesk"),
               SourceConfig(path=str(tmp_path / "dialogsum.jsonl"), format="dialogsum", tasks=["dialogue_topic"]))
    result = write_dataset(cfg, join(store.root, "runs", "f"), store)
    assert result.counts["rows_read"] == 16 and result.counts["records_kept"] == 16
    rows = [r for s in ("train", "validation", "test") for r in read_records(store, join(result.records_uri, f"{s}.parquet"))]
    helpdesk = next(r for r in rows if r["id"] == "helpdesk:3")
    assert helpdesk["fields"]["dialogue"] == "Customer: My router 3 drops wifi\nAgent: Please update the firmware now."
    assert helpdesk["fields"]["summary"].startswith("Router 3") and helpdesk["tasks"] is None
    assert {tuple(r["tasks"]) for r in rows if r["source"] == "dialogsum"} == {("dialogue_topic",)}


def test_unreadable_file_is_an_error_naming_it(tiny_config, store, tmp_path):
    bad = tmp_path / "dump.json"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    cfg = _cfg(tiny_config, SourceConfig(path=str(bad), format="samsum"))
    with pytest.raises(ValueError, match="dump.json"):
        write_dataset(cfg, join(store.root, "runs", "u"), store)
    with pytest.raises(FileNotFoundError, match="nope-"):
        write_dataset(_cfg(tiny_config, SourceConfig(path=str(tmp_path / "nope-*.jsonl"))), join(store.root, "runs", "m"), store)


def test_run_ingest_records_counts_and_version_in_mlflow(tiny_config, store):
    uri = _put(store, "m/chats.jsonl", [_chat(f"m{i}", text=f"my tablet {i} will not charge") for i in range(12)] + ["{x"])
    result = run_ingest(_cfg(tiny_config, SourceConfig(path=uri)), join(store.root, "runs", "ml"), "ml")
    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    run = MlflowClient().search_runs([mlflow.get_experiment_by_name(tiny_config.tracking.experiment).experiment_id],
                                     "tags.`mixtune.step` = 'ingest'")[0]
    assert run.data.tags["mixtune.dataset_version"] == result.dataset_version
    assert run.data.metrics["rows_read"] == 13 and run.data.metrics["rows_quarantined"] == 1
    assert run.data.metrics["files_read"] == 1


def test_a_changed_code_partner_file_is_read_again(tiny_config, store, tmp_path):
    (tmp_path / "pairs.java").write_text("int a() { return 1; }\nint b() { return 2; }\n")
    (tmp_path / "pairs.cs").write_text("int A() { return 1; }\nint B() { return 2; }\n")
    cfg = _cfg(tiny_config, SourceConfig(path=str(tmp_path / "*.java"), format="codexglue_java_cs", redact_pii=False))
    first = write_dataset(cfg, join(store.root, "runs", "c1"), store)
    assert first.files_read == [str(tmp_path / "pairs.java")] and first.counts["records_kept"] == 2
    assert write_dataset(cfg, join(store.root, "runs", "c2"), store).files_read == []
    (tmp_path / "pairs.cs").write_text("int A() { return 1; }\nint B() { return 20; }\n")
    again = write_dataset(cfg, join(store.root, "runs", "c3"), store)
    assert again.files_read == [str(tmp_path / "pairs.java")] and again.dataset_version != first.dataset_version


def test_duplicates_across_sources_keep_the_smallest_id(tiny_config, store):
    import random
    words = [f"{w}{n}" for w in ("router", "parcel", "invoice", "refund", "depot", "label") for n in range(40)]
    texts = [" ".join(random.Random(i).sample(words, 70)) for i in range(4)]  # unrelated conversations
    exported = [_chat(f"t{i}", text=t) for i, t in enumerate(texts)]
    # The same conversations reach a second export: one verbatim, one with its last word changed.
    again = [_chat("t0", text=texts[0]), _chat("t1", text=texts[1].rsplit(" ", 1)[0] + " monday"),
             _chat("n9", text="a different question about invoices and the billing address on file")]
    cfg = _cfg(tiny_config, SourceConfig(path=_put(store, "x/zz.jsonl", exported), name="zz"),
               SourceConfig(path=_put(store, "y/aa.jsonl", again), name="aa"))
    result = write_dataset(cfg, join(store.root, "runs", "x"), store)
    c = result.counts
    assert c["duplicates_exact"] == 1 and c["duplicates_near"] == 1 and c["records_kept"] == 5
    kept = {r["id"] for s in ("train", "validation", "test") for r in read_records(store, join(result.records_uri, f"{s}.parquet"))}
    assert {"aa:t0", "aa:t1", "aa:n9", "zz:t2", "zz:t3"} == kept  # "aa:" sorts first, whatever the source order
