"""The input-format entry point: one file's bytes -> one Parsed per input row (or per conversation).

parse_file picks the container (a bare one, or a preset's), reads raw units with their locators
(readers.py), and maps each through the FieldMapping (mapping.py). Every input row ends up in exactly
one Parsed, kept or quarantined with "<category>: <detail>"; the sum of `rows` is the file's row count.
A file that cannot be read at all raises UnreadableFileError naming it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Callable

from components.common.config import CONTAINERS, DataConfig, FieldMapping, SourceConfig
from components.ingest import readers
from components.ingest.mapping import MISSING, Mapper, RowError, compile_path, get_path
from components.ingest.presets import PRESETS
from components.ingest.readers import Unit, UnreadableFileError

__all__ = ["Parsed", "UnreadableFileError", "RowError", "parse_file", "resolve"]
TURNS_KEY = "__turns__"  # where a conversation's ordered turn rows are put for the mapping


@dataclass
class Parsed:
    line: int | None  # 1-based line of the row (JSONL/CSV/TSV/CoNLL/lines) or None
    key: str | None  # JSON array index like "[12]", or the conversation id for turns_* formats
    rows: int  # input rows this unit covers: 1, or a conversation's turn rows
    raw: str  # the raw row as text (decode errors replaced); the caller truncates it
    id: str | None  # original id (no source prefix) when ok
    fields: dict | None  # record fields when ok
    error: str | None  # "<category>: <detail>" when the row is quarantined


def resolve(spec: SourceConfig) -> tuple[str, FieldMapping, Callable | None]:
    """(container, mapping, prepare) of a source: a source's mapping replaces a preset's."""
    if spec.format in CONTAINERS:
        return spec.format, spec.mapping, None
    preset = PRESETS[spec.format]
    return preset.container, spec.mapping or preset.mapping, preset.prepare


def _required_columns(m: FieldMapping, turns: bool) -> dict[str, str]:
    """field -> path of what every row of a CSV must have; used to tell a headerless file."""
    need = {name: path for name, path in m.fields.items() if name not in m.optional}
    if m.id and "id" not in m.optional:
        need["id"] = m.id
    if m.dialogue and "dialogue" not in m.optional:
        need["dialogue"] = m.dialogue
    if turns:
        need.update(conversation=m.conversation, speaker=m.speaker, text=m.text)
        if m.timestamp:
            need["timestamp"] = m.timestamp
    elif m.messages:
        need["messages"] = m.messages
    return need


def _check_header(name: str, header: list[str], m: FieldMapping, turns: bool) -> None:
    cols = set(header)
    missing = [f"{field} ({path})" for field, path in _required_columns(m, turns).items()
               if not any(whole in cols or (segs and segs[0] in cols) for whole, segs in compile_path(path))]
    if missing:
        shown = ", ".join(repr(h) for h in header[:12])
        raise UnreadableFileError(f"{name}: header row has no column for {', '.join(missing)} "
                                  f"(columns: {shown}); is the header missing or the mapping wrong?")


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def _where(u: Unit) -> str:
    return f"line {u.line}" if u.line is not None else f"row {u.key}"


def group_turns(units: list[Unit], conversation: str, timestamp: str | None) -> list[Unit]:
    """One turn per row -> one unit per conversation, turns ordered by timestamp (stable)."""
    conv, ts = compile_path(conversation), compile_path(timestamp) if timestamp else None
    groups: dict[str, list[Unit]] = {}
    out: list[Unit | str] = []
    for u in units:
        cid = get_path(u.row, conv) if isinstance(u.row, dict) else MISSING
        if cid is MISSING or not str(cid).strip():
            out.append(Unit(u.line, u.key, u.raw, None, u.error or
                            f"missing field: turn row has no conversation id (column {conversation})"))
            continue
        cid = str(int(cid)) if isinstance(cid, float) and cid.is_integer() else str(cid).strip()
        if cid not in groups:
            groups[cid] = []
            out.append(cid)
        groups[cid].append(u)
    result = []
    for item in out:
        if isinstance(item, Unit):
            result.append(item)
            continue
        members = groups[item]
        raw = "\n".join(m.raw for m in members)
        unit = Unit(members[0].line, item, raw, None, None, len(members))
        bad = next((m for m in members if m.error), None)
        if bad is not None:
            unit.error = f"{bad.error} (turn row at {_where(bad)})"
        elif ts is not None:
            keys = []
            for m in members:
                value = get_path(m.row, ts)
                try:
                    keys.append(_timestamp(value))
                except (ValueError, TypeError, OverflowError):
                    what = "no timestamp" if value is MISSING else f"timestamp {str(value)[:40]!r}"
                    unit.error = f"bad value: turn row at {_where(m)} has {what} (column {timestamp})"
                    break
            if unit.error is None:
                members = [m for _, m in sorted(zip(keys, members), key=lambda km: km[0])]
        if unit.error is None:
            merged: dict = {}
            for m in members:  # other columns: the first non-empty value of the conversation
                for k, v in m.row.items():
                    if k not in merged or merged[k] is None or (isinstance(merged[k], str) and not merged[k].strip()):
                        merged[k] = v
            merged[TURNS_KEY] = [m.row for m in members]
            unit.row = merged
        result.append(unit)
    return result


def _read(container: str, spec: SourceConfig, m: FieldMapping, name: str, data: bytes, limits: DataConfig,
          sibling: Callable[[str], bytes]) -> list[Unit]:
    enc = spec.encoding
    if container == "jsonl":
        units = readers.read_jsonl(name, data, enc, limits)
    elif container == "json":
        return readers.read_json(name, data, enc, spec.records_path, limits)
    elif container in ("csv", "tsv", "turns_csv"):
        header, units = readers.read_csv(name, data, enc, limits, "\t" if container == "tsv" else ",")
        _check_header(name, header, m, container == "turns_csv")
    elif container in ("parquet", "turns_parquet"):
        units = readers.read_parquet(name, data, limits)
    elif container == "conll":
        units = readers.read_conll(name, data, enc, limits)
    elif container == "code_pairs":
        units = readers.read_code_pairs(name, data, enc, limits, sibling)
    else:
        raise ValueError(f"unknown container {container!r}")
    readers.check_not_binary(name, units)
    if container.startswith("turns_"):
        units = group_turns(units, m.conversation, m.timestamp)
    return units


def parse_file(spec: SourceConfig, file_name: str, data: bytes, limits: DataConfig,
               sibling: Callable[[str], bytes]) -> list[Parsed]:
    """Every row of one file, kept (id, fields) or quarantined (error); raises UnreadableFileError."""
    container, m, prepare = resolve(spec)
    turns = container.startswith("turns_")
    if turns:  # a conversation's ordered turn rows are its messages; its id is the conversation column
        m = m.model_copy(update={"messages": TURNS_KEY, "dialogue": None, "id": m.id or m.conversation})
    mapper = Mapper(m, limits)
    stem = PurePosixPath(file_name.rstrip("/")).stem
    out = []
    for u in _read(container, spec, m, file_name, data, limits, sibling):
        if u.error is None:
            try:
                row = prepare(u.row) if prepare else u.row
                rec_id, fields = mapper.map(row, f"{stem}-{u.line if u.line is not None else u.key}")
                out.append(Parsed(u.line, u.key, u.rows, u.raw, rec_id, fields, None))
                continue
            except RowError as e:
                u.error = str(e)
        out.append(Parsed(u.line, u.key, u.rows, u.raw, None, None, u.error))
    return out
