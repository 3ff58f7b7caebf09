"""Moving the `champion` alias by hand: `mixtune promote` and `mixtune rollback`.

promote runs the same gate as the register step on the version's own metrics.json (found through its
`mixtune.eval_uri` tag), against the champion as it is now; `--force` skips the gate and records who
forced it and why. Every promotion records the champion it replaced on the new champion's version
(`mixtune.replaced_champion`), so rollback walks that chain back one step at a time.
"""
from __future__ import annotations

import getpass
import json
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.common import tracking
from components.common.config import MixtuneConfig
from components.common.gate import decide
from components.common.registry import CHAMPION, EVAL_URI_TAG, REPLACED_TAG, alias_version
from components.common.storage import Store, join, require_complete
from components.common.tracking import MODEL_URI_TAG, PIPELINE_TAG
from components.register.core import gate_tags
from components.register.describe import version_description


class AliasError(ValueError):
    """A promote or rollback that must not happen; the message says why and what to do."""


@dataclass(frozen=True)
class AliasChange:
    model_name: str
    before: str | None
    after: str
    reason: str
    forced: bool = False


def _version(client: MlflowClient, name: str, version: str):
    try:
        return client.get_model_version(name, version)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise AliasError(f"model {name!r} has no version {version}") from None
        raise


def _audit(client: MlflowClient, name: str, change: AliasChange, action: str) -> None:
    """The last change on the registered model itself, for whoever asks why the champion is what it is."""
    record = {"action": action, "from": change.before, "to": change.after, "reason": change.reason,
              "forced": change.forced, "by": getpass.getuser(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    client.set_registered_model_tag(name, "mixtune.last_alias_change", json.dumps(record)[:4900])


def promote(cfg: MixtuneConfig, version: str, force: bool = False, reason: str | None = None) -> AliasChange:
    tracking.setup(cfg)
    client, name, store = MlflowClient(), cfg.registry.model_name, Store(cfg.storage)
    mv = _version(client, name, str(version))
    current = alias_version(client, name, CHAMPION)
    if current == str(mv.version):
        raise AliasError(f"{name} v{mv.version} is already champion")
    model_uri = mv.tags.get(MODEL_URI_TAG, mv.source)
    if model_uri.startswith("s3://"):
        require_complete(store, model_uri)
    if force:
        if not reason or not reason.strip():
            raise AliasError("--force needs --reason: a forced promotion skips the gate and must say why")
        change = AliasChange(name, current, str(mv.version), f"forced: {reason.strip()}", forced=True)
        client.set_model_version_tag(name, mv.version, "mixtune.forced_promotion", reason.strip()[:4900])
    else:
        eval_uri = mv.tags.get(EVAL_URI_TAG)
        if not eval_uri:
            raise AliasError(f"{name} v{mv.version} has no {EVAL_URI_TAG} tag (not registered by mixtune): "
                             "the gate has no scores to read; use --force --reason")
        metrics = store.get_json(join(eval_uri, "metrics.json"))
        decision = decide(cfg.registry.gate, metrics, current)
        if not decision.promote:
            raise AliasError(f"gate refuses {name} v{mv.version}: {decision.reason}")
        for k, v in gate_tags(decision).items():
            client.set_model_version_tag(name, mv.version, k, v)
        client.update_model_version(name, mv.version, description=version_description(
            decision, metrics, mv.tags.get(PIPELINE_TAG, "?")))
        change = AliasChange(name, current, str(mv.version), decision.reason)
    client.set_model_version_tag(name, mv.version, REPLACED_TAG, current or "none")
    client.set_registered_model_alias(name, CHAMPION, str(mv.version))
    _audit(client, name, change, "promote")
    return change


def rollback(cfg: MixtuneConfig, reason: str | None = None) -> AliasChange:
    """Champion back to the version the current champion replaced."""
    tracking.setup(cfg)
    client, name, store = MlflowClient(), cfg.registry.model_name, Store(cfg.storage)
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise AliasError(f"{name} has no champion: nothing to roll back")
    previous = _version(client, name, current).tags.get(REPLACED_TAG)
    if not previous or previous == "none":
        raise AliasError(f"{name} v{current} was the first champion: there is no previous champion to roll back to")
    prev = _version(client, name, previous)
    model_uri = prev.tags.get(MODEL_URI_TAG, prev.source)
    if model_uri.startswith("s3://"):
        require_complete(store, model_uri)  # never point production at a model whose files are gone
    note = (reason or "").strip() or "rollback"
    client.set_model_version_tag(name, current, "mixtune.rolled_back", note[:4900])
    client.set_registered_model_alias(name, CHAMPION, previous)
    change = AliasChange(name, current, previous, note)
    _audit(client, name, change, "rollback")
    return change
