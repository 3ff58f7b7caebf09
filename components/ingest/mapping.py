"""FieldMapping: one raw row (a dict) -> (original id, record fields), or RowError with the reason.

Paths are dotted with list indexes (`turns.0.text`, `turns[0].text`) and `a|b` alternatives: the first
alternative that is present and not blank wins. A column whose name itself has dots (`user.name` in a
CSV header) is matched whole first.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from components.common.config import DataConfig, FieldMapping

MISSING = object()
LIST_FIELDS = {"summaries", "tokens", "tags"}  # may be a list of strings
NUMBER_FIELDS = {"id", "rating"}  # numbers are accepted and written as text
TARGET_FIELDS = {"summary", "topic", "summaries"}  # bounded by max_target_chars
RATINGS = {"1", "2", "3", "4", "5"}


class RowError(ValueError):
    """A row that cannot be used; the message is the quarantine reason '<category>: <detail>'."""


def compile_path(path: str) -> list[tuple[str, tuple[str, ...]]]:
    """'a.b|c[0]' -> [('a.b', ('a', 'b')), ('c[0]', ('c', '0'))]."""
    alts = []
    for alt in path.split("|"):
        alt = alt.strip()
        segs = tuple(s for s in alt.replace("[", ".").replace("]", "").split(".") if s)
        alts.append((alt, segs))
    return alts


def _walk(obj: Any, segs: tuple[str, ...]) -> Any:
    for seg in segs:
        if isinstance(obj, dict):
            obj = obj.get(seg, MISSING)
        elif isinstance(obj, (list, tuple)):
            try:
                obj = obj[int(seg)]
            except (ValueError, IndexError):
                return MISSING
        else:
            return MISSING
        if obj is MISSING:
            return MISSING
    return obj


def get_path(obj: Any, compiled: list[tuple[str, tuple[str, ...]]]) -> Any:
    """The value at the first alternative that is present and not blank; else a blank one; else MISSING."""
    fallback = MISSING
    for whole, segs in compiled:
        value = obj.get(whole, MISSING) if isinstance(obj, dict) else MISSING
        if value is MISSING:
            value = _walk(obj, segs)
        if value is MISSING or value is None:
            continue
        if isinstance(value, str) and not value.strip():
            fallback = value
            continue
        return value
    return fallback


class _HtmlText(HTMLParser):
    BREAKS = {"br", "p", "div", "li", "tr", "td", "h1", "h2", "h3", "h4", "blockquote", "hr"}
    HIDDEN = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BREAKS:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_to_text(s: str) -> str:
    """Tags stripped (block tags and <br> become spaces), entities unescaped."""
    if "<" not in s:
        return html.unescape(s) if "&" in s else s
    p = _HtmlText()
    try:
        p.feed(s)
        p.close()
    except AssertionError as e:  # html.parser's way of refusing markup, e.g. an unknown '<![x' section
        raise RowError(f"bad value: HTML the parser cannot read ({str(e)[:60]})") from None
    return "".join(p.parts)


def _collapse(s: str) -> str:
    return " ".join(s.split())


class Mapper:
    """A FieldMapping compiled once per file; map() is called per row."""

    def __init__(self, m: FieldMapping, limits: DataConfig) -> None:
        self.m, self.limits = m, limits
        self.id = compile_path(m.id) if m.id else None
        self.dialogue = compile_path(m.dialogue) if m.dialogue else None
        self.messages = compile_path(m.messages) if m.messages else None
        self.speaker, self.text = compile_path(m.speaker), compile_path(m.text)
        self.speakers = {k.lower(): v for k, v in m.speakers.items()} if m.speakers is not None else None
        self.skip = {s.lower() for s in m.skip_speakers}
        self.fields = [(name, path, compile_path(path)) for name, path in m.fields.items()]
        self.optional = set(m.optional)

    def map(self, row: Any, fallback_id: str) -> tuple[str, dict]:
        if not isinstance(row, dict):
            raise RowError(f"wrong type: row is a {_kind(row)}, expected an object")
        fields: dict = {}
        if self.dialogue or self.messages:
            turns = self._turns(row)
            if turns is not None:
                self._check_turns(turns)
                fields["dialogue"] = self._limit("dialogue", "\n".join(f"{s}: {t}" for s, t in turns))
        for name, path, compiled in self.fields:
            value = self._value(row, name, path, compiled)
            if value is not MISSING:
                fields[name] = value
        rec_id = fallback_id
        if self.id:
            value = self._value(row, "id", self.m.id, self.id)
            if value is not MISSING:
                rec_id = value
        return rec_id, fields

    # --- dialogue ---------------------------------------------------------------------------------
    def _turns(self, row: dict) -> list[tuple[str, str]] | None:
        name, path, compiled = ("dialogue", self.m.dialogue, self.dialogue) if self.dialogue else \
            ("messages", self.m.messages, self.messages)
        value = get_path(row, compiled)
        if value is MISSING:
            if "dialogue" in self.optional:
                return None
            raise RowError(f"missing field: {name!r} (path {path})")
        if self.dialogue:
            if not isinstance(value, str):
                raise RowError(f"wrong type: 'dialogue' is a {_kind(value)}, expected text (path {path})")
            if not value.strip():
                if "dialogue" in self.optional:
                    return None
                raise RowError(f"empty field: 'dialogue' (path {path})")
            return self._text_turns(value)
        if not isinstance(value, list):
            raise RowError(f"wrong type: 'messages' is a {_kind(value)}, expected a list (path {path})")
        if not value:
            raise RowError(f"empty field: 'messages' is an empty list (path {path})")
        return self._message_turns(value)

    def _text_turns(self, text: str) -> list[tuple[str, str]]:
        # Fast path in comprehensions (most rows are clean); the loop below finds what is wrong.
        if not self.m.html:
            parts = [p.partition(":") for p in (" ".join(x.split()) for x in text.split("\n")) if p]
            who = [p[0].rstrip() for p in parts]
            said = [p[2].lstrip() for p in parts]
            skipped = self.skip and not self.skip.isdisjoint(w.lower() for w in set(who))
            if self.speakers is not None:
                who = [self.speakers.get(w.lower()) for w in who]
            if all(p[1] for p in parts) and all(who) and all(said) and not skipped:
                return list(zip(who, said))
        turns = []
        for n, line in enumerate(text.split("\n"), start=1):
            line = " ".join(line.split())  # whitespace collapsed, '\r' included
            if not line:
                continue
            speaker, sep, said = line.partition(":")
            speaker = speaker.rstrip()
            if not sep or not speaker:
                raise RowError(f"bad row: dialogue line {n} has no 'Speaker:' prefix: {line[:60]!r}")
            if speaker.lower() in self.skip:
                continue
            if self.speakers is not None:
                shown = self.speakers.get(speaker.lower())
                if shown is None:
                    raise RowError(f"unknown speaker: dialogue line {n} has speaker {speaker!r}")
                speaker = shown
            said = _collapse(html_to_text(said)) if self.m.html else said.lstrip()
            if not said:
                raise RowError(f"empty field: dialogue line {n} ({speaker!r}) has no text")
            turns.append((speaker, said))
        return turns

    def _message_turns(self, messages: list) -> list[tuple[str, str]]:
        turns = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise RowError(f"wrong type: message {i} is a {_kind(msg)}, expected an object")
            raw = get_path(msg, self.speaker)
            if raw is MISSING or (isinstance(raw, str) and not raw.strip()):
                raise RowError(f"missing field: message {i} has no speaker (path {self.m.speaker})")
            raw = _collapse(str(raw))
            if raw.lower() in self.skip:
                continue
            speaker = raw
            if self.speakers is not None:
                speaker = self.speakers.get(raw.lower())
                if speaker is None:
                    raise RowError(f"unknown speaker: message {i} has speaker {raw!r}")
            said = get_path(msg, self.text)
            if said is MISSING:
                raise RowError(f"missing field: message {i} has no text (path {self.m.text})")
            if not isinstance(said, str):
                raise RowError(f"wrong type: message {i} text is a {_kind(said)}, expected text")
            said = _collapse(html_to_text(said) if self.m.html else said)
            if not said:
                raise RowError(f"empty field: message {i} has no text")
            turns.append((speaker, said))
        return turns

    def _check_turns(self, turns: list[tuple[str, str]]) -> None:
        lim = self.limits
        if len(turns) < lim.min_turns:
            raise RowError(f"too few turns: {len(turns)} turn(s), need {lim.min_turns}")
        speakers = list(dict.fromkeys(s for s, _ in turns))
        if len(speakers) < lim.min_speakers:
            only = ", ".join(repr(s) for s in speakers)
            raise RowError(f"one-sided dialogue: only {only} speak{'s' if len(speakers) == 1 else ''}")

    # --- other fields ------------------------------------------------------------------------------
    def _value(self, row: dict, name: str, path: str, compiled) -> Any:
        value = get_path(row, compiled)
        optional = name in self.optional
        if value is MISSING:
            if optional:
                return MISSING
            raise RowError(f"missing field: {name!r} (path {path})")
        if name in LIST_FIELDS and isinstance(value, (list, tuple)):
            bad = next((i for i, v in enumerate(value) if not isinstance(v, str)), None)
            if bad is not None:
                raise RowError(f"wrong type: {name!r} item {bad} is a {_kind(value[bad])}, expected text (path {path})")
            items = [v.strip() for v in value]
            if name == "summaries":
                items = [self._limit(name, v) for v in items if v]
            else:
                self._limit(name, " ".join(items))  # one check for a whole token list
            if not items:
                if optional:
                    return MISSING
                raise RowError(f"empty field: {name!r} is an empty list (path {path})")
            return items
        if name in NUMBER_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
            # an int as written (float() overflows past 1e308); a float without a trailing ".0"
            value = str(value) if isinstance(value, int) else str(int(value)) if value.is_integer() else str(value)
        if not isinstance(value, str):
            raise RowError(f"wrong type: {name!r} is a {_kind(value)}, expected text (path {path})")
        value = value.strip()
        if not value:
            if optional:
                return MISSING
            raise RowError(f"empty field: {name!r} (path {path})")
        if name == "rating":
            value = value[:-2] if value.endswith(".0") else value
            if value not in RATINGS:
                raise RowError(f"bad value: rating {value[:20]!r} is not 1-5 (path {path})")
        value = self._limit(name, value)
        return [value] if name in LIST_FIELDS else value

    def _limit(self, name: str, value: str) -> str:
        lim = self.limits
        cap = lim.max_target_chars if name in TARGET_FIELDS else lim.max_field_chars
        if len(value) > cap:
            raise RowError(f"oversized field: {name!r} has {len(value)} chars, over {cap}")
        if "\x00" in value:
            raise RowError(f"binary data: {name!r} contains NUL bytes")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:  # a "\ud800"-style JSON escape: half a character, not text
                raise RowError(f"not UTF-8: {name!r} has a lone surrogate \\u{ord(value[e.start]):04x}") from None
        return value


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null", int: "number",
            float: "number"}.get(
        type(value), type(value).__name__)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def binary_reason(text: str) -> str | None:
    """'binary data: ...' for a row with NUL bytes or mostly control characters, else None."""
    if not _CONTROL.search(text):
        return None
    nul = text.find("\x00")
    if nul >= 0:
        return f"binary data: NUL byte at offset {nul}"
    n = len(_CONTROL.findall(text))
    if n >= 3 and n > 0.1 * len(text):
        return f"binary data: {n} control characters in {len(text)}"
    return None
