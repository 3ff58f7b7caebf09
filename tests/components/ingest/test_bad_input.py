"""One test per kind of bad input: the reason category, and every input row accounted for."""
import json

import pytest

from components.common.config import DataConfig, FieldMapping, SourceConfig
from components.ingest.formats import UnreadableFileError, parse_file

GOOD = {"conversation_id": "c1", "summary": "Customer asks; agent answers.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def row(**changes) -> bytes:
    r = {**GOOD, **changes}
    return json.dumps({k: v for k, v in r.items() if v is not ...}).encode()


def parse(lines, fmt="chatlog", name="x.jsonl", limits=None, **spec):
    """Good rows around the bad one: a file with one bad row must not look mostly binary."""
    data = b"\n".join([row(conversation_id=f"g{i}") for i in range(4)] + list(lines)) + b"\n"
    return run(data, fmt, name, limits, **spec)


def run(data, fmt="chatlog", name="x.jsonl", limits=None, **spec):
    src = SourceConfig(path=name, format=fmt, **spec)
    return parse_file(src, name, data, limits or DataConfig(), lambda other: b"")


def only_error(result, rows: int, category: str) -> str:
    assert sum(p.rows for p in result) == rows  # every input row is in exactly one Parsed
    errors = [p.error for p in result if p.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith(category + ": "), errors[0]
    bad = next(p for p in result if p.error)
    assert bad.raw and bad.id is None and bad.fields is None
    return errors[0]


def test_broken_json_row():
    reason = only_error(parse([b'{"conversation_id": "c9", "messages": [']), 5, "invalid JSON")
    assert "column" in reason


def test_a_json_row_that_is_not_an_object():
    assert "list" in only_error(parse([b"[1, 2]"]), 5, "wrong type")


def test_latin1_row_in_a_utf8_file():
    latin1 = json.dumps({**GOOD, "summary": "Caf\u00e9 closed"}, ensure_ascii=False).encode("latin-1")
    result = parse([latin1])
    reason = only_error(result, 5, "not UTF-8")
    assert "0xe9" in reason and "offset" in reason
    assert "\ufffd" in next(p.raw for p in result if p.error)  # the raw row is kept, decode errors replaced


def test_latin1_element_in_a_utf8_json_document():
    doc = [{"id": "a", "dialogue": "A: hi\nB: yo", "summary": "ok"}, {"id": "b", "dialogue": "A: \u00e9t\u00e9\nB: yo",
                                                                     "summary": "summer"}]
    data = json.dumps(doc, ensure_ascii=False).encode("latin-1")
    result = run(data, "samsum", "s.json")
    assert result[0].error is None and result[1].key == "[1]"
    assert result[1].error.startswith("not UTF-8: invalid byte 0xe9")


def test_utf16_without_bom_is_not_taken_for_text():
    data = "\n".join(json.dumps({**GOOD, "conversation_id": f"u{i}"}) for i in range(3)).encode("utf-16-le")
    with pytest.raises(UnreadableFileError, match="x.jsonl: mostly binary"):
        run(data)


def test_utf16_file_with_bom_is_read_whole():
    text = "\n".join(json.dumps({**GOOD, "conversation_id": f"u{i}", "summary": "Caf\u00e9 \u2603"},
                                ensure_ascii=False) for i in range(3))
    for data in (text.encode("utf-16"), b"\xfe\xff" + text.encode("utf-16-be")):
        result = run(data)
        assert [p.error for p in result] == [None] * 3
        assert result[2].fields["summary"] == "Caf\u00e9 \u2603"


def test_configured_encoding():
    data = ("review_id,stars,text\nr1,4,Tr\u00e8s bon\n").encode("cp1252")
    result = run(data, "yelp", "y.csv", encoding="cp1252")
    assert result[0].fields["review"] == "Tr\u00e8s bon"


def test_empty_dialogue():
    only_error(parse([row(messages=[])]), 5, "empty field")
    text = FieldMapping(id="id", dialogue="dialogue", fields={"summary": "summary"})
    data = json.dumps({"id": "d1", "dialogue": " \n ", "summary": "s"}).encode()
    assert "'dialogue'" in only_error(run(data, "jsonl", mapping=text), 1, "empty field")


def test_empty_message_text():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "agent", "content": "<p> </p>"}]
    reason = only_error(parse([row(messages=msgs)], mapping=FieldMapping(
        id="conversation_id", messages="messages", html=True, fields={"summary": "summary"})), 5, "empty field")
    assert reason == "empty field: message 1 has no text"


def test_too_few_turns():
    only_error(parse([row(messages=GOOD["messages"][:1])]), 5, "too few turns")


def test_one_sided_dialogue():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "customer", "content": "Anyone?"}]
    assert only_error(parse([row(messages=msgs)]), 5, "one-sided dialogue") == \
        "one-sided dialogue: only 'Customer' speaks"


def test_missing_target():
    assert "'summary'" in only_error(parse([row(summary=...)]), 5, "missing field")


def test_empty_target():
    only_error(parse([row(summary="   ")]), 5, "empty field")


def test_wrong_type_target():
    assert "'summary' is a number" in only_error(parse([row(summary=42)]), 5, "wrong type")


def test_oversized_row_is_caught_before_parsing():
    limits = DataConfig(max_row_bytes=300)
    reason = only_error(parse([b'{"conversation_id": "big", "x": "' + b"a" * 400], limits=limits), 5,
                        "oversized row")
    assert "over 300" in reason


def test_oversized_fields():
    limits = DataConfig(max_field_chars=60, max_target_chars=40)
    long_turn = [{"role": "user", "content": "word " * 20}, {"role": "agent", "content": "ok"}]
    assert "'dialogue'" in only_error(parse([row(messages=long_turn)], limits=limits), 5, "oversized field")
    assert "'summary'" in only_error(parse([row(summary="s" * 41)], limits=limits), 5, "oversized field")


def test_binary_junk_row():
    only_error(parse([b"\x00\x01\x02\x03junk\x00\x00"]), 5, "binary data")
    only_error(parse([row(summary="a\x00b")]), 5, "binary data")  # an escaped NUL inside a field


def test_unknown_speaker():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "bot9", "content": "beep"}]
    assert only_error(parse([row(messages=msgs)]), 5, "unknown speaker") == \
        "unknown speaker: message 1 has speaker 'bot9'"


def test_rating_out_of_range():
    data = b"review_id,stars,text\nr1,5,Good\nr2,7,Odd\nr3,,Blank\n"
    result = run(data, "yelp", "y.csv")
    assert sum(p.rows for p in result) == 3
    assert [p.error.split(":")[0] if p.error else None for p in result] == [None, "bad value", "empty field"]


def test_csv_row_with_too_many_values():
    result = run(b"review_id,stars,text\nr1,5,Good\nr2,4,too,many\n", "yelp", "y.csv")
    assert [p.error for p in result] == [None, "bad row: 4 values for 3 header columns"]


def test_conll_line_without_tag():
    result = run(b"Bob\tB-person\nruns\n\nok\tO\n", "wnut17", "w.conll")
    assert [p.rows for p in result] == [1, 1] and result[0].error.startswith("bad row: line 2")


def test_misaligned_code_pairs():
    src = SourceConfig(path="t.java", format="codexglue_java_cs")
    partner = {"t.cs": b"A(){}\nB(){}\n"}
    result = parse_file(src, "t.java", b"a(){}\nb(){}\nc(){}\nd(){}\n", DataConfig(), partner.__getitem__)
    assert sum(p.rows for p in result) == 4
    assert [p.error.split(":")[0] if p.error else None for p in result] == [None, None, "misaligned", "misaligned"]


def test_turn_with_bad_timestamp_quarantines_its_conversation():
    m = FieldMapping(conversation="c", speaker="who", text="t", timestamp="ts")
    data = b"c,ts,who,t\n1,2024-01-01,a,hi\n1,yesterday,b,yo\n2,5,a,x\n2,6,b,y\n"
    result = run(data, "turns_csv", "t.csv", mapping=m)
    assert sum(p.rows for p in result) == 4
    assert result[0].error.startswith("bad value: turn row at line 3") and result[1].error is None


@pytest.mark.parametrize("fmt,name,data,why", [
    ("samsum", "broken.json", b'[{"id": "1", "dialogue": "A: hi\\nB: yo", "summary": "s"}, {"id": ', "not a JSON document"),
    ("samsum", "obj.json", b'{"data": []}', "records_path"),
    ("chatlog", "blob.jsonl", bytes(range(256)) * 20, "mostly binary"),
    ("chatlog", "dump.jsonl.gz", b"\x1f\x8b\x08\x00" + bytes(range(256)), "gzip"),
    ("parquet", "bad.parquet", b"PAR1 this is not parquet PAR1", "not a Parquet file"),
    ("yelp", "noheader.csv", b"abc,5,Great food\nxyz,4,Fine\n", "header row has no column"),
    ("yelp", "empty.csv", b"", "no header row"),
    ("codexglue_java_cs", "x.java", b"a(){}\n", "partner x.cs cannot be read"),
])
def test_unreadable_file_names_the_file(fmt, name, data, why):
    mapping = FieldMapping(fields={"summary": "s"}) if fmt == "parquet" else None

    def sibling(other):
        raise FileNotFoundError(other)

    src = SourceConfig(path=name, format=fmt, mapping=mapping)
    with pytest.raises(UnreadableFileError, match=why) as e:
        parse_file(src, name, data, DataConfig(), sibling)
    assert str(e.value).startswith(name)
