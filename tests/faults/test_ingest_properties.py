"""Bad input, property-based: for every ingest format, arbitrary bad input (random bytes, truncated files,
random JSON values as rows, wrong types in fields, huge and empty strings, invalid UTF-8, lone surrogate
escapes, deep nesting, mixed good and bad rows) gives either

  (a) parsed rows where every input row is accounted for exactly once: kept (id + fields) or quarantined
      with a "<category>: <detail>" reason and its raw row, the `rows` summing to the rows in; or
  (b) UnreadableFileError whose message starts with the file's name,

and never any other exception. Checked at the parse_file level for each format, and once for the whole
ingest (write_dataset on the real S3 server): rows_read == kept + quarantined + duplicates, and the
quarantine written to S3 holds every quarantined row with its reason.
"""
from __future__ import annotations

import codecs
import json
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from components.common.config import DataConfig, FieldMapping, SourceConfig
from components.common.schemas import read_rows
from components.common.storage import join
from components.ingest.core import write_dataset
from components.ingest.formats import UnreadableFileError, parse_file
from components.ingest.presets import ROLES

from tests.faults.bad_input import (
    CASES, CATEGORIES, PROFILE, SMALL, _blank, _lines, conll_rows, csv_file, json_file, json_row_bytes,
    jsonl_file, jsonl_rows, parquet_file, text_lines
)


# --- the formats ----------------------------------------------------------------------------------
CHAT = {"conversation_id": "c1", "summary": "Customer asks; agent answers.",
        "messages": [{"role": "user", "content": "Hi, my parcel is late"}, {"role": "assistant", "content": "Sorry!"}]}
DIALOGSUM = {"fname": "train_1", "dialogue": "#Person1#: Is the gate open?\n#Person2#: Yes, since noon.",
             "summary": "The gate is open.", "topic": "airport", "summary1": "Gate open."}
TWEETSUMM = {"id": "t1", "summaries": ["Customer cannot log in.", "Login fixed."],
             "dialogue": "\tCustomer:\t@Help can't log in &amp; app crashes\nVersion 5\n"
                         "\tAgent:\t@12 Try a reset &lt;3"}
SAMSUM = {"id": "s1", "dialogue": "Amanda: I baked cookies.\r\nJerry: Sure!", "summary": "Amanda baked cookies."}
IBM = {"dialogHeader": {"sessionID": "s1"},
       "dialogContent": [{"client": "bob", "message": "Big news &amp; more", "tweet_ID": "1"},
                         {"agent": "Acme", "message": "<p>Hi <b>bob</b></p>", "tweet_ID": "2"}],
       "agentURL": {"tweet_ID": "3", "url_utterance": "See https://example.com/help"}}
HELPDESK = {"ticket": {"id": 7}, "thread": [{"from": "client", "body": "<p>My router drops wifi</p>"},
                                            {"from": "agent", "body": "Update the firmware&nbsp;now."}],
            "agent_note": "Router drops wifi; advised an update.", "stars": 4}
HELPDESK_MAP = FieldMapping(id="ticket.id", messages="thread", speaker="from", text="body", html=True,
                            speakers={"client": "Customer", "agent": "Agent"},
                            fields={"summary": "agent_note", "rating": "stars"}, optional=["rating"])
TURNS_MAP = FieldMapping(conversation="conversation_id", speaker="role", text="content", timestamp="ts",
                         speakers=ROLES, fields={"summary": "summary"}, optional=["summary"])
TURN_HEADER = ["conversation_id", "ts", "role", "content", "summary"]
TURN_ROWS = [["c1", "5", "user", "hello there", "s"], ["c1", "2024-01-01T10:00:00Z", "agent", "how can I help?", ""],
             ["c2", "7", "customer", "refund please", ""], ["c2", "8.5", "assistant", "done", "Refund done."]]
PARQUET_MAP = FieldMapping(id="id", messages="messages", speakers=ROLES, fields={"summary": "summary",
                                                                                 "rating": "rating"},
                           optional=["rating"])
PARQUET_GOOD = {"id": lambda i: f"p{i}", "summary": lambda i: f"summary {i}", "rating": lambda i: 1 + i % 5,
                "messages": lambda i: [{"role": "user", "content": f"hi {i}"}, {"role": "agent", "content": "yo"}]}
TURNS_GOOD = {"conversation_id": lambda i: f"c{i // 2}", "ts": lambda i: i,
              "role": lambda i: "user" if i % 2 else "agent", "content": lambda i: f"turn {i}",
              "summary": lambda i: "s"}


@dataclass(frozen=True)
class Fmt:
    label: str
    name: str  # the file name parse_file is given
    spec: SourceConfig
    files: st.SearchStrategy  # -> bytes, or (bytes, expected rows or None)
    rows: Callable[[bytes], int | None] | None = None  # independent count of the rows in a file
    partner: bool = False  # code pairs: the strategy also gives the .cs partner (or None: missing)


def _src(fmt: str, name: str, **kw) -> SourceConfig:
    return SourceConfig(path=name, format=fmt, **kw)


def _code_pairs() -> st.SearchStrategy:
    return st.tuples(text_lines(), st.one_of(st.none(), text_lines()))


def json_rows(records_path: str | None = None) -> Callable[[bytes], int | None]:
    """The elements of a JSON document's record array, or None when it is not one (the file is refused)."""
    def count(data: bytes) -> int | None:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return None
        try:
            doc = json.loads(data.removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            return None
        for seg in records_path.split(".") if records_path else []:
            doc = doc.get(seg) if isinstance(doc, dict) else None
        return len(doc) if isinstance(doc, list) else None
    return count


FORMATS = [
    Fmt("jsonl chat logs (chatlog)", "chats/export.jsonl", _src("chatlog", "chats/export.jsonl"),
        jsonl_file(CHAT), jsonl_rows),
    Fmt("jsonl dialogsum", "dialogsum.train.jsonl", _src("dialogsum", "dialogsum.train.jsonl"),
        jsonl_file(DIALOGSUM), jsonl_rows),
    Fmt("jsonl tweetsumm (HTML)", "tweetsumm_test.jsonl", _src("tweetsumm", "tweetsumm_test.jsonl"),
        jsonl_file(TWEETSUMM), jsonl_rows),
    Fmt("jsonl with a mapping", "notes.jsonl", _src("jsonl", "notes.jsonl", mapping=HELPDESK_MAP),
        jsonl_file(HELPDESK), jsonl_rows),
    Fmt("json array samsum", "val.json", _src("samsum", "val.json"), json_file(SAMSUM), json_rows()),
    Fmt("json ibm_customer_care", "dev.json", _src("ibm_customer_care", "dev.json"), json_file(IBM), json_rows()),
    Fmt("json with records_path", "notes.json",
        _src("json", "notes.json", mapping=HELPDESK_MAP, records_path="export.items"),
        json_file(HELPDESK, "export.items"), json_rows("export.items")),
    Fmt("csv yelp", "yelp.csv", _src("yelp", "yelp.csv"),
        csv_file(["review_id", "stars", "text"], [["r", "4", "Great food, slow service"]], ",")),
    Fmt("tsv amazon_alexa", "alexa.tsv", _src("amazon_alexa", "alexa.tsv"),
        csv_file(["rating", "date", "variation", "verified_reviews", "feedback"],
                 [["5", "31-Jul-18", "Charcoal Fabric", "Love my Echo!", "1"]], "\t")),
    Fmt("csv turn rows", "turns.csv", _src("turns_csv", "turns.csv", mapping=TURNS_MAP),
        csv_file(TURN_HEADER, TURN_ROWS, ",", unique=False)),
    Fmt("parquet with a mapping", "table.parquet", _src("parquet", "table.parquet", mapping=PARQUET_MAP),
        parquet_file(["id", "messages", "summary", "rating"], PARQUET_GOOD)),
    Fmt("parquet turn rows", "turns.parquet", _src("turns_parquet", "turns.parquet", mapping=TURNS_MAP),
        parquet_file(TURN_HEADER, TURNS_GOOD)),
    Fmt("conll wnut17", "wnut17train.conll", _src("wnut17", "wnut17train.conll"), text_lines(), conll_rows),
    Fmt("code pairs java/cs", "data/train.java", _src("codexglue_java_cs", "data/train.java"), _code_pairs(),
        partner=True),
]

# Inputs that crashed parse_file before the fixes in components/ingest (kept as explicit examples).
CRASHERS = {
    # RecursionError from json.loads on a deeply nested row; ValueError (int over 4300 digits) escaping read_jsonl;
    # OverflowError converting a 400-digit id to float.
    "jsonl chat logs (chatlog)": [b"[" * 5000 + b"]" * 5000, b'{"conversation_id": ' + b"9" * 5000 + b"}",
                                  b'{"conversation_id": 1' + b"0" * 400 + b', "summary": "s", "messages": '
                                  b'[{"role": "user", "content": "a"}, {"role": "agent", "content": "b"}]}',
                                  # a \\u escape of half a character: valid JSON, but the text cannot be stored
                                  b'{"conversation_id": "c\\ud800", "summary": "s", "messages": '
                                  b'[{"role": "user", "content": "a"}, {"role": "agent", "content": "b"}]}'],
    # AssertionError from html.parser on an unknown marked section.
    "jsonl tweetsumm (HTML)": [
        b'{"id": "t", "summaries": ["s"], "dialogue": "\\tCustomer:\\t<![foo bar\\n\\tAgent:\\tok"}'],
    # TypeError: an unhashable tweet_ID (a list) in agentURL / dialogContent; a lone surrogate in the raw row.
    "json ibm_customer_care": [json.dumps([{**IBM, "agentURL": {"tweet_ID": [1], "url_utterance": "bye"}}]).encode(),
                               json.dumps([{**IBM, "dialogContent": [{"client": "b", "tweet_ID": {}}]}]).encode(),
                               b'[{"id": "\\udc80", "dialogue": 1}]'],
    "json array samsum": [b"[" * 5000 + b"]" * 5000,
                          b'[{"id": "s\\ud800", "dialogue": "A: hi\\nB: yo", "summary": "s"}]'],
    # Rows miscounted, not a crash: a lone CR in an unquoted field (csv.writer leaves it so) or a stray quote
    # failed the record half-way and the reader resumed inside the quoted field that followed, so each of
    # its lines became a "row" of its own (one input row reported as 4).
    "csv yelp": [(b'review_id,stars,text\nr1,4\r,"line 1\nline 2\nline 3"\nr2,5,ok\n', 2),
                 (b'review_id,stars,text\nr1,"4"x,"line 1\nline 2\nline 3"\nr2,5,ok\n', 2)],
    "csv turn rows": [(b'conversation_id,ts,role,content,summary\nc1,5\r,user,"a\nb\nc",s\nc1,6,agent,yo,s\n', 2)],
}


def _what(failure: BaseException) -> str:
    if isinstance(failure, BaseExceptionGroup):  # several explicit examples failed
        return ", ".join(sorted({type(e).__name__ for e in failure.exceptions}))
    return type(failure).__name__


def check_outcome(fmt: Fmt, data: bytes, expected: int | None, partner: bytes | None, stats: Counter) -> None:
    """The property: quarantine with every row accounted for, or UnreadableFileError naming the file."""
    limits = SMALL if len(data) % 2 else DataConfig()

    def sibling(other: str) -> bytes:
        if partner is None:
            raise FileNotFoundError(other)
        return partner

    stats["cases"] += 1
    try:
        parsed = parse_file(fmt.spec, fmt.name, data, limits, sibling)
    except UnreadableFileError as e:
        partner_name = fmt.name.rsplit("/", 1)[-1].replace(".java", ".cs")
        assert str(e).startswith((fmt.name, partner_name)), f"message does not start with the file name: {e}"
        stats["refused"] += 1
        return
    if expected is None and fmt.rows is not None:
        expected = fmt.rows(data)
    if fmt.partner and partner is not None:
        expected = code_pair_rows(data, partner)
    where = set()
    for p in parsed:
        assert p.rows >= 1
        place = (p.line, p.key)
        assert (p.line is not None and p.line >= 1) or isinstance(p.key, str), place
        where.add(place)
        if p.error is None:
            assert isinstance(p.id, str) and p.id and isinstance(p.fields, dict), p
            json.dumps(p.fields, ensure_ascii=False).encode("utf-8")  # storable: no lone surrogates
            p.id.encode("utf-8")
            stats["kept"] += p.rows
        else:
            category, sep, detail = p.error.partition(": ")
            assert sep and category in CATEGORIES, f"reason without a known category: {p.error!r}"
            assert p.id is None and p.fields is None, p
            assert isinstance(p.raw, str) and p.raw, f"quarantined row without its raw text: {p}"
            p.raw.encode("utf-8")  # the raw row is kept, decode errors replaced: storable as text
            stats["quarantined"] += p.rows
            stats[category] += 1
    if not fmt.spec.format.startswith("turns_"):
        assert len(where) == len(parsed), "two rows claim the same line/key"
    if expected is not None:
        assert sum(p.rows for p in parsed) == expected, (sum(p.rows for p in parsed), expected)


def code_pair_rows(java: bytes, cs: bytes) -> int | None:
    j, c = _lines(java), _lines(cs)
    if j is None or c is None:
        return None
    last = lambda lines: max((i + 1 for i, line in enumerate(lines) if not _blank(line)), default=0)  # noqa: E731
    nj, nc = last(j), last(c)
    return sum(1 for i in range(max(nj, nc))
               if (i < nj and not _blank(j[i])) or (i < nc and not _blank(c[i])))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.label)
def test_bad_input_is_quarantined_or_refused_never_a_crash(fmt: Fmt, record):
    stats: Counter = Counter()

    @settings(max_examples=CASES, **PROFILE)
    @given(case=fmt.files)
    def prop(case):
        if fmt.partner:
            data, partner = case
            check_outcome(fmt, data, None, partner, stats)
        elif isinstance(case, tuple):
            check_outcome(fmt, case[0], case[1], None, stats)
        else:
            check_outcome(fmt, case, None, None, stats)

    for crasher in CRASHERS.get(fmt.label, []):
        prop = example(case=crasher)(prop)
    failure = None
    try:
        prop()
    except Exception as e:  # recorded as a failed row of the table, then re-raised by record()
        failure = e
    n = stats["cases"]
    observed = (f"{n} cases: {stats['quarantined']} rows quarantined, {stats['kept']} kept, "
                f"{stats['refused']} files refused, {'failed: ' + _what(failure) if failure else '0 crashes'}")
    record(f"bad input: {fmt.label} (hypothesis)", "clear error or quarantine; counts add up", observed,
           failure is None)
    if failure is not None:
        raise failure


# --- the whole ingest -----------------------------------------------------------------------------
INGEST_EXAMPLES = 8


@st.composite
def export_lines(draw) -> list[bytes]:
    """A chat export: a few good conversations, copies of them (the same id, or the same text under
    another id), and bad rows, shuffled."""
    good = [{**CHAT, "conversation_id": f"g{i}", "summary": f"Parcel {i} is late; agent checks order {i * 7919}.",
             "messages": [{"role": "user", "content": f"order {i * 7919} ({'abcdefgh'[i]}) never arrived"},
                          {"role": "assistant", "content": f"I reopened ticket {i} for you."}]}
            for i in range(draw(st.integers(1, 4)))]
    lines = [json.dumps(g).encode() for g in good]
    for g in draw(st.lists(st.sampled_from(good), max_size=2)):
        cid = draw(st.sampled_from([g["conversation_id"], "copy"]))  # the same id, or the same text
        lines.append(json.dumps({**g, "conversation_id": cid}).encode())
    lines += draw(st.lists(json_row_bytes(CHAT), min_size=1, max_size=10))
    return draw(st.permutations(lines))


def test_whole_ingest_counts_add_up_and_quarantine_keeps_every_bad_row(tiny_config, store, record):
    """write_dataset on the real S3 server: rows_read == kept + quarantined + duplicates, and the
    quarantine in S3 holds each quarantined row with a categorised reason and its raw text."""
    stats: Counter = Counter()
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={
        "workers": 1, "max_row_bytes": 3000, "max_field_chars": 500, "max_target_chars": 150})})

    @settings(max_examples=INGEST_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow], **PROFILE)
    @given(lines=export_lines())
    @example(lines=[json.dumps(CHAT).encode(), b"[" * 5000 + b"]" * 5000, b'{"conversation_id": "\\ud800"}',
                    b'{"conversation_id": "c\\udfff", "summary": "s", "messages": '
                    b'[{"role": "user", "content": "a"}, {"role": "agent", "content": "b"}]}'])
    def prop(lines):
        stats["cases"] += 1
        data = b"\n".join(lines) + b"\n"
        key = f"fuzz/{stats['cases']:03d}/chats.jsonl"
        uri = join(store.root, "incoming", key)
        store.put_bytes(uri, data)
        run = join(store.root, "runs", f"fuzz-{stats['cases']:03d}")
        spec = SourceConfig(path=uri, format="chatlog", name="fuzz")
        try:
            result = write_dataset(cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": [spec]})}),
                                   run, store)
        except UnreadableFileError as e:
            assert str(e).startswith(uri)
            stats["refused"] += 1
            return
        except ValueError as e:  # nothing usable: a clear error naming the object and the counts
            assert str(e).startswith("no usable rows") and uri in str(e), e
            stats["no usable rows"] += 1
            return
        c = result.counts
        assert c["rows_read"] == c["rows_kept"] + c["rows_quarantined"] + c["rows_duplicate"], c
        assert c["rows_read"] == jsonl_rows(data), (c, jsonl_rows(data))
        quarantine = read_rows(store, join(result.report_uri, "quarantine.parquet"))
        assert len(quarantine) == c["rows_quarantined"] == c["records_quarantined"]
        for q in quarantine:
            assert q["file"] == uri and q["line"] >= 1 and q["raw"], q
            assert q["reason"].partition(": ")[0] in CATEGORIES, q["reason"]
        assert sum(result.quarantine_reasons.values()) == len(quarantine)
        report = store.get_json(join(result.report_uri, "report.json"))
        assert report["per_file"][uri]["rows"] == c["rows_read"]
        for k in ("rows_read", "rows_kept", "rows_quarantined", "rows_duplicate"):
            stats[k] += c[k]

    failure = None
    try:
        prop()
    except Exception as e:
        failure = e
    observed = (f"{stats['cases']} runs, {stats['rows_read']} rows: {stats['rows_kept']} kept, "
                f"{stats['rows_quarantined']} quarantined, {stats['rows_duplicate']} duplicates, "
                f"{'failed: ' + _what(failure) if failure else '0 crashes'}")
    record("bad input: whole ingest on S3 (hypothesis)", "read = kept + quarantined + duplicates", observed,
           failure is None)
    if failure is not None:
        raise failure


def test_property_helpers_count_rows_like_the_readers():
    """The independent row counts the properties compare against."""
    assert jsonl_rows(b"a\n\n \r\nb\r\n") == 2
    assert jsonl_rows(codecs.BOM_UTF8 + b"x") == 1 and jsonl_rows(codecs.BOM_UTF16_LE + b"x") is None
    assert conll_rows(b"a\tO\nb\tO\n\n\nc\tO\n") == 2
    assert code_pair_rows(b"a\n\nb\n", b"x\n") == 2
    assert json_rows("a.b")(b'{"a": {"b": [1, {}]}}') == 2 and json_rows()(b"[1,") is None
