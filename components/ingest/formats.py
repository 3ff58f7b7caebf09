"""Parsers from one raw input row to a normalised record, or a reason the row cannot be used.

A parser returns (original_id, dialogue, target) or raises RowError with a reason a person can act on.
"""
from __future__ import annotations

import json

# Speaker roles seen in chat exports, mapped to the two sides of a support conversation.
ROLE_NAMES = {
    "customer": "Customer", "user": "Customer", "client": "Customer", "human": "Customer",
    "agent": "Agent", "assistant": "Agent", "support": "Agent", "bot": "Agent",
}
SKIPPED_ROLES = {"system"}


class RowError(ValueError):
    """A row that cannot be used; the message is the quarantine reason."""


def _load_object(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise RowError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise RowError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _text(obj: dict, field: str) -> str:
    if field not in obj or obj[field] is None:
        raise RowError(f"missing field '{field}'")
    value = obj[field]
    if not isinstance(value, str):
        raise RowError(f"field '{field}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise RowError(f"field '{field}' is empty")
    return value


def _id(obj: dict, *fields: str) -> str:
    for field in fields:
        value = obj.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    raise RowError(f"missing id (one of {', '.join(repr(f) for f in fields)})")


def parse_chatlog(line: str) -> tuple[str, str, str, int]:
    """{conversation_id, messages: [{role, content}], summary} -> (id, dialogue, target, turns)."""
    obj = _load_object(line)
    conv_id = _id(obj, "conversation_id", "id")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise RowError("field 'messages' must be a list of {role, content}")
    lines = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RowError(f"message {i} is not an object")
        role = str(msg.get("role", "")).strip().lower()
        if role in SKIPPED_ROLES:
            continue
        if role not in ROLE_NAMES:
            raise RowError(f"message {i} has unknown speaker role {msg.get('role')!r}")
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RowError(f"message {i} has empty content")
        lines.append(f"{ROLE_NAMES[role]}: {' '.join(content.split())}")
    return conv_id, "\n".join(lines), _text(obj, "summary"), len(lines)


def parse_dialogsum(line: str) -> tuple[str, str, str, int]:
    """DialogSum JSONL: fname/id, dialogue ('#Person1#: ...' lines), summary (or summary1 in test)."""
    obj = _load_object(line)
    rec_id = _id(obj, "fname", "id")
    dialogue = _text(obj, "dialogue")
    target = _text(obj, "summary" if "summary" in obj else "summary1")
    turns = [t for t in dialogue.splitlines() if t.strip()]
    return rec_id, "\n".join(t.strip() for t in turns), target, len(turns)


PARSERS = {"chatlog": parse_chatlog, "dialogsum": parse_dialogsum}
