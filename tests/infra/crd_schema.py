"""Checking a custom resource against its CRD's OpenAPI v3 schema offline, unknown keys included.

A structural CRD schema never sets additionalProperties: false, so plain JSON Schema validation accepts a
misspelt key, and the API server would prune it without a word. unknown_keys() walks the object with the
schema: a key that is not in an object schema's `properties` is an error unless the schema allows extra
keys (additionalProperties, x-kubernetes-preserve-unknown-fields). Embedded `metadata` (an opaque object
in the schema, ObjectMeta to the API server) is held to ObjectMeta's fields. schema_errors() adds types,
enums and required fields (jsonschema). The CRDs live in ../shared/crds, never in the repo.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from kubernetes.client import V1ObjectMeta

REPO = Path(__file__).resolve().parents[2]
KSERVE_CRD = REPO.parent / "shared" / "crds" / "kserve-v0.20.0" / "serving.kserve.io_inferenceservices.yaml"
OBJECT_META = frozenset(V1ObjectMeta.attribute_map.values())


@lru_cache(maxsize=4)
def _load(path: Path, version: str) -> dict:
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB of YAML
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


def crd_schema(path: Path = KSERVE_CRD, version: str = "v1beta1") -> dict:
    """The version's openAPIV3Schema; skips the test when ../shared is not there."""
    if not path.exists():
        pytest.skip(f"{path} is absent (KServe's CRD lives in ../shared/crds)")
    return _load(path, version)


def _opens_any_key(schema: dict) -> bool:
    return schema.get("additionalProperties") is True or bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def unknown_keys(value, schema: dict, path: str = "") -> list[str]:
    """Dotted paths of the keys the schema does not know (what an API server would prune)."""
    found: list[str] = []
    if isinstance(value, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        is_meta = path.rsplit(".", 1)[-1] == "metadata" and properties is None and not isinstance(extra, dict)
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_keys(child, properties[key], where)
            elif isinstance(extra, dict):
                found += unknown_keys(child, extra, where)
            elif is_meta:
                if key not in OBJECT_META:
                    found.append(where)
            elif not _opens_any_key(schema):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_keys(item, schema["items"], f"{path}[{i}]")
    return found


def schema_errors(doc: dict, schema: dict) -> list[str]:
    """Type, enum, pattern and required-field errors, one line each with the path."""
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in Draft7Validator(schema).iter_errors(doc)]


def check(doc: dict, schema: dict) -> list[str]:
    """Every problem the API server would reject or silently drop."""
    return [f"{p}: unknown key" for p in unknown_keys(doc, schema)] + schema_errors(doc, schema)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, what the API server does with a custom resource PATCH."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
