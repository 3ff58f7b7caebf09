"""The body of POST /invocations, MLflow's scoring protocol, read into a list of dialogues or refused
with a message that names the problem (field, index, limit). Every refusal is a 4xx: bad input never
reaches the model.

Accepted (exactly one key, plus an optional empty `params`):
  {"inputs": ["dialogue", ...]}             {"instances": ["dialogue", ...]}
  {"dataframe_records": [{"dialogue": "..."}, ...]}
  {"dataframe_split": {"columns": ["dialogue"], "data": [["..."], ...]}}
A dataframe may have one column of any name, or several with one named `dialogue`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

INPUT_KEYS = ("inputs", "instances", "dataframe_records", "dataframe_split")
COLUMN = "dialogue"


@dataclass
class BadRequest(ValueError):
    status: int  # 400, 413 or 415
    kind: str  # the errors_total label
    message: str

    def __str__(self) -> str:
        return self.message


def json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def bad(message: str) -> BadRequest:
    return BadRequest(400, "bad_request", message)


def parse_json(body: bytes) -> dict:
    if not body.strip():
        raise bad("empty body: send a JSON object such as {\"inputs\": [\"Customer: ...\\nAgent: ...\"]}")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise bad("body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise bad(f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(doc, dict):
        raise bad(f"body must be a JSON object with one of {list(INPUT_KEYS)}, got a JSON {json_type(doc)}")
    return doc


def _column(columns: list, where: str) -> int:
    if not columns:
        raise bad(f"{where}: no columns")
    if len(columns) == 1:
        return 0
    if COLUMN in columns:
        return columns.index(COLUMN)
    raise bad(f"{where}: columns {columns}: send one column, or one named {COLUMN!r}")


def _texts(doc: dict) -> tuple[str, list]:
    keys = [k for k in INPUT_KEYS if k in doc]
    unknown = sorted(set(doc) - set(INPUT_KEYS) - {"params"})
    if unknown:
        raise bad(f"unknown field(s) {unknown}: expected one of {list(INPUT_KEYS)} (and optional params)")
    if len(keys) != 1:
        raise bad(f"missing field: send exactly one of {list(INPUT_KEYS)}" if not keys
                  else f"send exactly one of {list(INPUT_KEYS)}, got {keys}")
    if doc.get("params"):
        raise bad("params are not supported: generation settings travel with the model version")
    key = keys[0]
    value = doc[key]
    if key in ("inputs", "instances"):
        if not isinstance(value, list):
            raise bad(f"{key} must be a list of strings (dialogues), got a JSON {json_type(value)}")
        return key, value
    if key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise bad("dataframe_records must be a list of objects, e.g. [{\"dialogue\": \"...\"}]")
        if not value:
            return key, []
        columns = list(value[0])
        name = columns[_column(columns, "dataframe_records")]
        missing = [i for i, r in enumerate(value) if name not in r]
        if missing:
            raise bad(f"dataframe_records[{missing[0]}] has no {name!r} field")
        return key, [r[name] for r in value]
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise bad("dataframe_split must be an object with columns and data, e.g. "
                  "{\"columns\": [\"dialogue\"], \"data\": [[\"...\"]]}")
    columns = value.get("columns") or [COLUMN]
    if not isinstance(columns, list):
        raise bad("dataframe_split.columns must be a list of column names")
    col = _column(columns, "dataframe_split")
    rows = value["data"]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise bad(f"dataframe_split.data[{i}] must be a list of {len(columns)} value(s)")
    return key, [row[col] for row in rows]


def read_dialogues(body: bytes, max_inputs: int, max_chars: int) -> list[str]:
    """The dialogues of a request, each a non-empty string within the limits."""
    key, texts = _texts(parse_json(body))
    if not texts:
        raise bad(f"{key} is empty: send at least one dialogue")
    if len(texts) > max_inputs:
        raise bad(f"{len(texts)} inputs in one request; at most {max_inputs} (serve.max_inputs): split it")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad(f"{key}[{i}] is a JSON {json_type(text)}, not a string (a dialogue)")
        if not text.strip():
            raise bad(f"{key}[{i}] is empty: a dialogue needs text")
        if len(text) > max_chars:
            raise bad(f"{key}[{i}] has {len(text)} characters; at most {max_chars} (serve.max_input_chars)")
    return texts
