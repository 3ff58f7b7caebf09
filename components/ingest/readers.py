"""Containers: the bytes of one file -> raw units (a row, a sentence, a code pair, or a conversation of
turn rows), each with where it came from. Rows that cannot be read become units with an error; a file
that cannot be read at all raises UnreadableFileError."""
from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass
from typing import Any, Callable

from components.common.config import DataConfig
from components.ingest.mapping import MISSING, binary_reason, compile_path, get_path

MAGIC = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"PAR1": "Parquet", b"BZh9": "bzip2", b"\xfd7zXZ": "xz",
         b"(\xb5/\xfd": "zstd", b"%PDF": "PDF", b"\x89PNG": "PNG"}
BINARY_SHARE = 0.3  # more undecodable/binary rows than this: the file is not text at all


class UnreadableFileError(ValueError):
    """A whole file that cannot be read; the message starts with the file name and says why."""


@dataclass
class Unit:
    line: int | None
    key: str | None
    raw: str
    row: Any = None  # the parsed row (a dict for the mapping); None when it could not be read
    error: str | None = None
    rows: int = 1


def _sniff(name: str, data: bytes) -> None:
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            raise UnreadableFileError(f"{name}: a {kind} file, not text (decompress or convert it first)")


def _bom(name: str, data: bytes, encoding: str) -> tuple[bytes, str]:
    """A byte-order mark wins over the configured encoding."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:], "utf-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data, "utf-16"
    try:
        return data, codecs.lookup(encoding).name
    except LookupError:
        raise UnreadableFileError(f"{name}: unknown encoding {encoding!r} in the source config") from None


def _json_limit(e: Exception) -> str:
    """Why json.loads refused text that is valid JSON: too deep, or an integer over Python's digit limit."""
    return "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]


def safe_text(text: str) -> str:
    """Text with lone surrogates (undecodable bytes, half-character escapes) replaced: storable as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _split(text: str) -> list[str]:
    return [t[:-1] if t.endswith("\r") else t for t in text.split("\n")]


def _bad_byte(enc: str, chunk: bytes, e: UnicodeDecodeError) -> str:
    detail = f"invalid byte 0x{chunk[e.start]:02x} at offset {e.start}"
    return f"not UTF-8: {detail}" if enc == "utf-8" else f"binary data: not {enc}, {detail}"


def decode_lines(name: str, data: bytes, encoding: str) -> list[tuple[int, str, str | None]]:
    """(1-based line, text without line end, decode error or None) for every line of a text file."""
    _sniff(name, data)
    data, enc = _bom(name, data, encoding)
    try:
        return [(n, t, None) for n, t in enumerate(_split(data.decode(enc)), start=1)]
    except UnicodeDecodeError as e:
        if "\n".encode(enc) != b"\n":  # a multi-byte encoding cannot be split into lines as bytes
            raise UnreadableFileError(f"{name}: not valid {enc}: {e.reason} at byte {e.start}") from None
    out = []  # decode line by line so that one bad row is quarantined and the rest kept
    for n, chunk in enumerate(data.split(b"\n"), start=1):
        chunk = chunk[:-1] if chunk.endswith(b"\r") else chunk
        try:
            out.append((n, chunk.decode(enc), None))
        except UnicodeDecodeError as e:
            out.append((n, chunk.decode(enc, "replace"), _bad_byte(enc, chunk, e)))
    return out


def row_problem(raw: str, limits: DataConfig) -> str | None:
    """Oversized or binary, checked on the raw text before any parsing."""
    cap = limits.max_row_bytes
    if len(raw) * 4 > cap:  # UTF-8 is at most 4 bytes a character: only long rows need encoding
        size = len(raw.encode("utf-8", "surrogateescape"))
        if size > cap:
            return f"oversized row: {size} bytes, over {cap}"
    return binary_reason(raw)


def check_not_binary(name: str, units: list[Unit]) -> None:
    bad = sum(1 for u in units if u.error and u.error.startswith(("not UTF-8", "binary data")))
    if bad >= 2 and bad > BINARY_SHARE * len(units):
        raise UnreadableFileError(f"{name}: mostly binary ({bad} of {len(units)} rows undecodable or binary); "
                                  "is it text in the configured encoding?")


def read_jsonl(name: str, data: bytes, encoding: str, limits: DataConfig) -> list[Unit]:
    units = []
    for n, text, err in decode_lines(name, data, encoding):
        if not text.strip():
            continue  # blank lines are not rows
        err = err or row_problem(text, limits)
        row = None
        if err is None:
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                err = f"invalid JSON: {e.msg} (column {e.colno})"
            except (ValueError, RecursionError) as e:  # valid JSON that Python will not hold
                err = f"invalid JSON: {_json_limit(e)}"
        units.append(Unit(n, None, text, row, err))
    return units


def read_json(name: str, data: bytes, encoding: str, records_path: str | None, limits: DataConfig) -> list[Unit]:
    """A document: an array of rows, or an object whose `records_path` is that array."""
    _sniff(name, data)
    data, enc = _bom(name, data, encoding)
    lossy = False
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        if enc != "utf-8":
            raise UnreadableFileError(f"{name}: not valid {enc}: {e.reason} at byte {e.start}") from None
        text, lossy = data.decode(enc, "surrogateescape"), True  # bad bytes are found per element below
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableFileError(f"{name}: not a JSON document: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise UnreadableFileError(f"{name}: not a JSON document Python can read: {_json_limit(e)}") from None
    items = doc if records_path is None else get_path(doc, compile_path(records_path))
    if items is MISSING:
        raise UnreadableFileError(f"{name}: records_path {records_path!r} is not in the document")
    if not isinstance(items, list):
        hint = "; set records_path to the array of records" if isinstance(items, dict) else ""
        raise UnreadableFileError(f"{name}: expected an array of records, found a {type(items).__name__}{hint}")
    units = []
    for i, el in enumerate(items):
        raw = json.dumps(el, ensure_ascii=False)
        err = None
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as e:  # an undecodable byte (lossy), or a \uD800-style escape
            bad = ord(raw[e.start])
            if lossy and 0xDC80 <= bad <= 0xDCFF:
                err = f"not UTF-8: invalid byte 0x{bad - 0xDC00:02x} at offset {e.start}"
            else:
                err = f"not UTF-8: lone surrogate \\u{bad:04x} at offset {e.start} (half a character)"
            raw = safe_text(raw)
        units.append(Unit(None, f"[{i}]", raw, el, err or row_problem(raw, limits)))
    return units


def read_csv(name: str, data: bytes, encoding: str, limits: DataConfig,
             delimiter: str) -> tuple[list[str], list[Unit]]:
    """(header, rows); a row is a dict column -> text and its line is where the record starts."""
    lines = decode_lines(name, data, encoding)
    texts = [t + "\n" for _, t, _ in lines]  # keep line ends: quoted fields may span lines
    errors = {n: e for n, _, e in lines if e}
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # oversized rows are ours to report
    # A lone CR inside a line is data; the csv module would end the field there and fail the record
    # half-way, out of step with the lines of a quoted field that follows. It is parsed as a stand-in.
    cr = next((c for c in "\ue000\ue001\ue002\ue003\ue004" if not any(c in t for t in texts)), None) \
        if any("\r" in t for t in texts) else None
    src = [t.replace("\r", cr) for t in texts] if cr else texts
    reader = csv.reader(src, delimiter=delimiter, strict=True)  # strict: a stray quote is a bad row
    header: list[str] | None = None
    units: list[Unit] = []
    done = base = 0  # physical lines consumed so far; lines before the current reader
    while True:
        try:
            rec = next(reader)
            problem = None
            if cr:
                rec = [c.replace(cr, "\r") for c in rec]
        except StopIteration:
            break
        except csv.Error as e:
            why = "a quote is never closed" if "end of data" in str(e) else str(e)
            rec, problem = None, f"bad row: {why}"
            end = _record_end(src, done, delimiter)  # resume after the whole bad record, not inside it
            if end > base + reader.line_num:
                base, reader = end, csv.reader(_from(src, end), delimiter=delimiter, strict=True)
        start, done = done + 1, base + reader.line_num
        while start < done and not texts[start - 1].strip():
            start += 1
        if rec is not None and (not rec or (len(rec) == 1 and not rec[0].strip())):
            continue  # blank lines are not rows
        raw = "".join(texts[start - 1:done]).rstrip("\r\n")
        if header is None and rec is not None:
            header = [h.strip() for h in rec]
            continue
        err = next((errors[n] for n in range(start, done + 1) if n in errors), None) if errors else None
        err = err or problem or row_problem(raw, limits)
        if err is None and len(rec) != len(header):
            err = f"bad row: {len(rec)} values for {len(header)} header columns"
        units.append(Unit(start, None, raw, None if err else dict(zip(header, rec)), err))
    if header is None:
        raise UnreadableFileError(f"{name}: no header row (the file is empty)")
    return header, units


def _from(lines: list[str], first: int):
    return (lines[i] for i in range(first, len(lines)))  # not a slice: no copy per bad row


def _record_end(src: list[str], first: int, delimiter: str) -> int:
    """The line after the record starting at src[first], read leniently (a stray quote taken as text)."""
    lenient = csv.reader(_from(src, first), delimiter=delimiter)
    try:
        while not next(lenient):  # blank lines before the record
            pass
    except (csv.Error, StopIteration):
        return 0
    return first + lenient.line_num


def read_parquet(name: str, data: bytes, limits: DataConfig) -> list[Unit]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    except Exception as e:  # pyarrow raises several types for a file it cannot open
        raise UnreadableFileError(f"{name}: not a Parquet file pyarrow can read ({e})") from None
    units = []
    for i, row in enumerate(rows):
        raw = json.dumps(row, ensure_ascii=False, default=str)
        units.append(Unit(None, f"[{i}]", raw, row, row_problem(raw, limits)))
    return units


def read_conll(name: str, data: bytes, encoding: str, limits: DataConfig) -> list[Unit]:
    """token<TAB>BIO-tag per line, a blank line between sentences; one sentence = one row."""
    units: list[Unit] = []
    sentence: list[tuple[int, str, str | None]] = []

    def flush() -> None:
        if not sentence:
            return
        raw = "\n".join(t for _, t, _ in sentence)
        err = next((e for _, _, e in sentence if e), None) or row_problem(raw, limits)
        tokens, tags = [], []
        for n, text, _ in sentence:
            if err:
                break
            parts = text.split("\t")
            if len(parts) != 2:
                parts = text.strip().rsplit(None, 1)
            tok, tag = (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else ("", "")
            if not tok or not tag:
                err = f"bad row: line {n} is not 'token<TAB>tag': {text.strip()[:40]!r}"
            elif tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
                err = f"bad row: line {n} has tag {tag[:20]!r}, expected O, B-<type> or I-<type>"
            tokens.append(tok)
            tags.append(tag)
        row = None if err else {"tokens": tokens, "tags": tags}
        units.append(Unit(sentence[0][0], None, raw, row, err))
        sentence.clear()

    for line in decode_lines(name, data, encoding):
        if line[1].strip():
            sentence.append(line)
        else:
            flush()
    flush()
    return units


def read_code_pairs(name: str, data: bytes, encoding: str, limits: DataConfig,
                    sibling: Callable[[str], bytes]) -> list[Unit]:
    """Line i of x.java and line i of its partner x.cs are one row {java, cs}."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if not base.endswith(".java"):
        raise UnreadableFileError(f"{name}: name the .java file of each pair; its .cs partner is read next to it")
    partner = base[: -len(".java")] + ".cs"
    try:
        partner_data = sibling(partner)
    except Exception as e:  # a local file or an S3 object: either may be missing
        raise UnreadableFileError(f"{name}: its partner {partner} cannot be read ({e})") from None
    java, cs = decode_lines(name, data, encoding), decode_lines(partner, partner_data, encoding)
    nj = max((n for n, t, _ in java if t.strip()), default=0)
    nc = max((n for n, t, _ in cs if t.strip()), default=0)
    units = []
    for i in range(max(nj, nc)):
        j = java[i] if i < nj else None
        c = cs[i] if i < nc else None
        if not (j and j[1].strip()) and not (c and c[1].strip()):
            continue  # blank in both: not a row
        raw = f"{j[1] if j else ''}\n{c[1] if c else ''}"
        if j is None or c is None:
            short, count = (base, nj) if j is None else (partner, nc)
            err = f"misaligned: line {i + 1} has no partner, {short} has only {count} lines"
        else:
            err = j[2] or c[2] or row_problem(raw, limits)
        units.append(Unit(i + 1, None, raw, None if err else {"java": j[1], "cs": c[1]}, err))
    return units

