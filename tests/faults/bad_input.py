"""Hypothesis strategies for bad ingest input (tests/faults/test_ingest_properties.py): good rows with
values replaced, deleted or emptied, broken JSON lines and documents, CSV with stray quotes and CRs,
Parquet with wrong column types, CoNLL and code-pair text lines, and independent row counters that
say how many rows a reader must account for."""
from __future__ import annotations

import codecs
import copy
import csv
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from components.common.config import DataConfig

# Every reason a quarantined row may carry: "<category>: <detail>".
CATEGORIES = {"invalid JSON", "wrong type", "not UTF-8", "binary data", "oversized row", "oversized field",
              "missing field", "empty field", "too few turns", "one-sided dialogue", "unknown speaker",
              "bad value", "bad row", "misaligned"}
CASES = 100  # examples per format at the parse_file level
SMALL = DataConfig(max_row_bytes=3000, max_field_chars=500, max_target_chars=150)  # limits reached often
PROFILE = dict(deadline=None, derandomize=True, database=None, print_blob=False)

# --- values ---------------------------------------------------------------------------------------
SPECIAL_TEXT = ["", " ", "\t\r\n ", "\x00", "a\x00b", "\x01\x02\x03\x04", "\ud800", "ok \udcff", "<![foo bar",
                "<script>x", "&amp;&#0;&#xD800;", "Agent: hi", "\tCustomer:\thi", "user", "assistant", "system",
                "B-person", "I-", "O", "5", "5.0", "7", "-1", "NaN", "1e400", "9" * 40, "../../x", "\u00e9\u2603",
                "\u2028\u0085", "\x1c\x1d", "\ufeff", "\r", "\"", "\"a,b\"", "a\tb", "2024-01-01T00:00:00Z",
                "yesterday", "summary1", "#Person1#: hi"]
SPECIAL_VALUES = [10**400, -(10**40), 2**63, float("nan"), float("inf"), -0.0, 1e308, True, False, None,
                  [], {}, [None], {"": None}, [[[]]], ["a", 1], {"role": "user"}, {"message": None}]

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "\u00e9", "word ", "\x00", "<b>", "Agent: x\n"]),
              st.integers(100, 4000)),  # huge strings
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(
    ["role", "content", "message", "client", "client1", "agent", "tweet_ID", "url_utterance", "summary", "id",
     "dialogue", "messages", "conversation_id", "summaries", "topic", "sessionID", "text", "stars"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts,
                    st.sampled_from(SPECIAL_VALUES).map(copy.deepcopy))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=10)


arrow_texts = texts.filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))  # Arrow holds only UTF-8


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


def _slots(obj: Any, out: list) -> list:
    """Every (container, key) in a JSON value: the places a mutation can hit."""
    if isinstance(obj, dict):
        for k in list(obj):
            out.append((obj, k))
            _slots(obj[k], out)
    elif isinstance(obj, list):
        for i in range(len(obj)):
            out.append((obj, i))
            _slots(obj[i], out)
    return out


@st.composite
def mutated(draw, good: dict) -> Any:
    """A good row with 1-3 fields (at any depth) replaced by a random value, deleted, or emptied."""
    row = copy.deepcopy(good)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(row, [])
        if not slots:
            break
        container, k = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "delete", "empty", "huge"]))
        if action == "delete":
            del container[k]
        elif action == "empty":
            container[k] = draw(st.sampled_from(["", " ", [], {}, None]))
        elif action == "huge":
            container[k] = "word " * draw(st.integers(100, 5000))
        else:
            container[k] = draw(json_values)
    return row


def _dumps(draw, value: Any) -> bytes:
    """JSON text of a value; unescaped lone surrogates become invalid UTF-8 bytes in the file."""
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return _utf8(text)


@st.composite
def json_row_bytes(draw, good: dict) -> bytes:
    """One JSONL line: good, mutated, any JSON value, truncated, garbage text or bytes, or a JSON trap."""
    kind = draw(st.sampled_from(["good", "mutated", "mutated", "value", "truncated", "text", "bytes", "trap"]))
    if kind == "good":
        return _dumps(draw, {**good, **{k: f"{v}-{draw(st.integers(0, 10**6))}" for k, v in good.items()
                                      if k in ("id", "conversation_id", "fname") and isinstance(v, str)}})
    if kind == "mutated":
        return _dumps(draw, draw(mutated(good)))
    if kind == "value":
        return _dumps(draw, draw(json_values))
    if kind == "truncated":
        line = _dumps(draw, good)
        return line[: draw(st.integers(0, len(line) - 1))]
    if kind == "text":
        return _utf8(draw(texts).replace("\n", " "))
    if kind == "bytes":
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    return draw(st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000, b'{"id": ' + b"9" * 5000 + b"}",
                                 b'{"id": 1' + b"0" * 400 + b"}", b"NaN", b"-Infinity", b'"\\ud800"', b"\x00" * 10]))


def _finish(draw, lines: list[bytes]) -> bytes:
    """Join lines (LF or CRLF, with blank lines), then maybe truncate the file or prepend a BOM."""
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    data = sep.join(lines) + draw(st.sampled_from([b"", b"\n"]))
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if draw(st.integers(0, 19)) == 0:
        data = codecs.BOM_UTF8 + data
    return data


@st.composite
def jsonl_file(draw, good: dict) -> bytes:
    return _finish(draw, draw(st.lists(json_row_bytes(good), min_size=1, max_size=12)))


@st.composite
def json_file(draw, good: dict, records_path: str | None = None) -> bytes:
    """A JSON document: an array (under records_path) of good, mutated or random elements; sometimes broken."""
    kind = draw(st.sampled_from(["array", "array", "array", "value", "truncated", "bytes", "latin1"]))
    items = draw(st.lists(st.one_of(mutated(good), st.just(good), json_values), max_size=10))
    doc: Any = items
    if records_path:
        for seg in reversed(records_path.split(".")):
            doc = {seg: doc}
    if kind == "value":
        doc = draw(json_values)
    data = _dumps(draw, doc)
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == "bytes":
        data = draw(st.binary(max_size=200))
    elif kind == "latin1":  # non-UTF-8 bytes inside some elements' strings
        data = json.dumps(doc, ensure_ascii=False).encode("latin-1", "replace")
    return data


# --- CSV ------------------------------------------------------------------------------------------
cells = st.one_of(texts, st.sampled_from(["1", "5", "4.0", "0", "", "c1", "c2", "user", "agent", "3"]))


@st.composite
def csv_file(draw, header: list[str], goods: list[list[str]], delimiter: str,
             unique: bool = True) -> tuple[bytes, int | None]:
    """(file, data rows in it or None when the file was cut): rows written by csv.writer, so each is one
    record whatever it holds; sometimes raw garbage lines, a truncated file, or random bytes."""
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["good", "good", "cells", "cells", "width", "random"]))
        row = list(draw(st.sampled_from(goods)))
        if kind == "good" and unique:  # a fresh id
            row[0] = f"{row[0]}{draw(st.integers(0, 10**6))}"
        elif kind == "cells":
            for _ in range(draw(st.integers(1, 2))):
                row[draw(st.integers(0, len(row) - 1))] = draw(cells)
        elif kind == "width":
            cut = draw(st.integers(0, len(row)))
            row = row[:cut] if draw(st.booleans()) else row + draw(st.lists(cells, max_size=3))
        else:
            row = draw(st.lists(cells, max_size=len(header) + 2))
        rows.append(row)
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    data = _utf8(buf.getvalue())
    expected: int | None = sum(1 for r in rows if not (not r or (len(r) == 1 and not r[0].strip())))
    mode = draw(st.integers(0, 9))
    if mode == 0:
        data, expected = data[: draw(st.integers(0, max(0, len(data) - 1)))], None
    elif mode == 1:
        garbage = draw(st.lists(st.one_of(st.binary(max_size=40), texts.map(_utf8)),
                                min_size=1, max_size=3))
        data, expected = data + b"\n".join(garbage), None
    elif mode == 2:
        data, expected = draw(st.binary(max_size=200)), None
    return data, expected


# --- Parquet --------------------------------------------------------------------------------------
def _column(draw, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["text", "text", "int", "float", "bool", "list", "struct", "binary", "timestamp",
                                 "date", "null", "messages"]))
    if kind == "text":
        return pa.array(draw(st.lists(st.none() | arrow_texts, min_size=n, max_size=n)), pa.string())
    if kind == "int":
        return pa.array(draw(st.lists(st.none() | st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)), pa.int64())
    if kind == "float":
        return pa.array(draw(st.lists(st.none() | st.floats(), min_size=n, max_size=n)), pa.float64())
    if kind == "bool":
        return pa.array(draw(st.lists(st.none() | st.booleans(), min_size=n, max_size=n)), pa.bool_())
    if kind == "list":
        return pa.array(draw(st.lists(st.none() | st.lists(st.text(max_size=5), max_size=3), min_size=n, max_size=n)),
                        pa.list_(pa.string()))
    if kind == "struct":
        return pa.array(draw(st.lists(st.none() | st.fixed_dictionaries({"role": st.none() | st.text(max_size=5)}),
                                      min_size=n, max_size=n)), pa.struct([("role", pa.string())]))
    if kind == "binary":
        return pa.array(draw(st.lists(st.none() | st.binary(max_size=10), min_size=n, max_size=n)), pa.binary())
    if kind == "timestamp":
        return pa.array(draw(st.lists(st.none() | st.integers(-2**40, 2**40), min_size=n, max_size=n)),
                        pa.timestamp("s", tz=draw(st.sampled_from([None, "UTC"]))))
    if kind == "date":
        return pa.array(draw(st.lists(st.none() | st.integers(-10**6, 10**6), min_size=n, max_size=n)), pa.date32())
    if kind == "null":
        return pa.nulls(n)
    msgs = st.lists(st.fixed_dictionaries({"role": st.none() | st.sampled_from(["user", "agent", "bot9", ""]),
                                           "content": st.none() | arrow_texts}),
                    max_size=3)
    return pa.array(draw(st.lists(st.none() | msgs, min_size=n, max_size=n)),
                    pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))


@st.composite
def parquet_file(draw, columns: list[str], good: dict) -> tuple[bytes, int | None]:
    """A table whose named columns are good or of a random type; sometimes cut short or bit-flipped."""
    n = draw(st.integers(0, 8))
    arrays, names = [], []
    for name in columns + draw(st.lists(st.sampled_from(["extra", "x.y", ""]), max_size=2, unique=True)):
        if name in good and draw(st.integers(0, 3)) > 0:
            arrays.append(pa.array([good[name](i) for i in range(n)]))
        elif draw(st.integers(0, 5)) == 0:
            continue  # a missing column
        else:
            arrays.append(_column(draw, n))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)  # no columns at all: no rows
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data, expected = buf.getvalue(), table.num_rows
    mode = draw(st.integers(0, 9))
    if mode == 0:
        data, expected = data[: draw(st.integers(0, len(data) - 1))], None
    elif mode == 1:
        i = draw(st.integers(0, len(data) - 1))
        data, expected = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:], None
    return data, expected


# --- text lines: CoNLL and code pairs --------------------------------------------------------------
line_texts = st.one_of(texts.map(lambda t: t.replace("\n", " ")),
                       st.sampled_from(["Bob\tB-person", "runs\tO", "New York\tI-location", "x\tB-", "tok tag",
                                        "a\tb\tc", "\t", "Paris\tB-location"]))


@st.composite
def text_lines(draw, min_size: int = 0) -> bytes:
    lines = draw(st.lists(st.one_of(line_texts.map(_utf8),
                                    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ")), st.just(b"")),
                          min_size=min_size, max_size=14))
    return _finish(draw, lines)


def _blank(line: bytes) -> bool:
    return not line.decode("utf-8", "replace").strip()


def _lines(data: bytes) -> list[bytes] | None:
    """The file's lines as the readers see them, or None for a UTF-16 file (read whole, not split as bytes)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    return data.removeprefix(codecs.BOM_UTF8).split(b"\n")


def jsonl_rows(data: bytes) -> int | None:
    lines = _lines(data)
    return None if lines is None else sum(1 for line in lines if not _blank(line))


def conll_rows(data: bytes) -> int | None:
    lines = _lines(data)
    if lines is None:
        return None
    sentences, inside = 0, False
    for line in lines:
        if _blank(line):
            inside = False
        elif not inside:
            sentences, inside = sentences + 1, True
    return sentences
