"""Where a config key came from and what was meant: the file's line of each key, the nearest valid key.

Used by config.parse_config to turn pydantic's "Extra inputs are not permitted" into
`--set train.max_stepz: unknown key; did you mean train.max_steps?` or `configs/demo.yaml line 12: ...`.
"""
from __future__ import annotations

import difflib
import types
import typing

import yaml
from pydantic import BaseModel


def key_lines(text: str) -> dict[str, int]:
    """Dotted key ("data.sources.0.path") -> 1-based line of that key in the YAML text."""
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                dotted = f"{prefix}{k.value}"
                out[dotted] = k.start_mark.line + 1
                walk(v, dotted + ".")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[f"{prefix}{i}"] = v.start_mark.line + 1
                walk(v, f"{prefix}{i}.")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass  # the caller reports invalid YAML itself
    return out


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field's type can hold (through Optional, list, dict and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        args = typing.get_args(annotation)
        return [m for a in (args[-1:] if origin is dict else args) for m in _models_in(a)]
    return []


def model_at(root: type[BaseModel], path: list[str | int]) -> type[BaseModel] | None:
    """The model that holds the keys at `path` (list indexes and dict keys are stepped through)."""
    model = root
    for part in path:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        if part not in fields:
            return None
        inner = _models_in(fields[part].annotation)
        if not inner:
            return None
        model = inner[0]
    return model


def nearest_key(root: type[BaseModel], loc: tuple) -> str | None:
    """The valid dotted key nearest to an unknown one, or None when nothing is close."""
    *parents, leaf = [p for p in loc]
    model = model_at(root, list(parents))
    if model is None or not isinstance(leaf, str):
        return None
    names = [f.alias or name for name, f in model.model_fields.items()]
    match = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    return ".".join(str(p) for p in [*parents, match[0]]) if match else None
