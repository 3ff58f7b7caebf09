"""Lineage on a registered version: the examples it was trained on and the evaluation set it was gated on,
so a retrain of the champion can replay the one and be scored on the other, found through the registry
rather than by reading run ids.

Register tags every version with the templates output its run trained on (`mixtune.templates_uri`: the
train split there holds the replay that run carried itself, with its stream weights in the manifest, so
round N replays rounds 1..N-1) and the version that replay came from. Evaluate's eval_set.parquet is
already on the version (`mixtune.eval_uri`).
"""
from __future__ import annotations

from dataclasses import dataclass

from components.common.config import MODELS_SCHEME, MixtuneConfig, parse_models_uri
from components.common.registry import EVAL_URI_TAG, resolve
from components.common.storage import Store, join

TEMPLATES_URI_TAG = "mixtune.templates_uri"
REPLAY_FROM_TAG = "mixtune.replay_from_version"  # the version whose examples this one replayed ("none")


class LineageError(ValueError):
    """A version's lineage is missing or gone: the message names the version and what to do."""


@dataclass(frozen=True)
class ReplaySource:
    uri: str | None  # the templates output to replay; None = nothing to replay
    version: str | None  # the registered version it belongs to (None: by hand, or nothing)
    ref: str | None  # what the config asked for: `champion`, `3`
    note: str

    def as_dict(self) -> dict:
        return {"uri": self.uri, "version": self.version, "from": self.ref, "note": self.note}


def resolve_replay(cfg: MixtuneConfig, store: Store) -> ReplaySource:
    """What templates.mixture.replay names, resolved once for the run."""
    replay = cfg.templates.mixture.replay
    if replay.examples_uri:
        return ReplaySource(replay.examples_uri, None, None, "replay.examples_uri, set by hand")
    if replay.from_ is None:
        return ReplaySource(None, None, None, "replay off")
    name, which = cfg.registry.model_name, replay.from_
    try:
        found = resolve(name, which, fetch=False)
    except ValueError as e:
        raise LineageError(f"templates.mixture.replay.from {which!r}: {e}") from None
    if found is None:
        return ReplaySource(None, None, which, f"{name} has no {which!r} yet (the loop's first round): "
                            "nothing to replay")
    where = f"templates.mixture.replay.from {which!r}: {name} v{found.version}"
    uri = found.tags.get(TEMPLATES_URI_TAG)
    if not uri:
        raise LineageError(
            f"{where} has no lineage (tag {TEMPLATES_URI_TAG}): it was registered before mixtune recorded "
            "what a version was trained on, or by hand. Name its templates output in "
            "templates.mixture.replay.examples_uri, or train without replay (replay.from: null)")
    missing = [f for f in ("train.parquet", "manifest.json") if not store.exists(join(uri, f))]
    if missing:
        raise LineageError(
            f"{where} was trained on {uri}, but {', '.join(missing)} is gone there (deleted, or another bucket): "
            "its examples cannot be replayed. Restore them, name another templates output in "
            "replay.examples_uri, or train without replay (replay.from: null)")
    return ReplaySource(uri, found.version, which, f"the examples {name} v{found.version} was trained on")


def same_alias(cfg: MixtuneConfig) -> str | None:
    """The alias model.base and replay.from both name on registry.model_name, if they do (they must then
    resolve to one version in a run); None otherwise."""
    base, replay_from = cfg.model.base, cfg.templates.mixture.replay.from_
    if not base.startswith(MODELS_SCHEME) or replay_from is None:
        return None
    name, which = parse_models_uri(base)
    return which if name == cfg.registry.model_name and which == replay_from else None


def check_same_version(cfg: MixtuneConfig, replay: dict, base_version: str | None) -> None:
    """model.base and replay.from name one alias: the versions the shards and templates steps pinned must
    agree, or this run would train one version on another version's examples."""
    alias = same_alias(cfg)
    if alias is None or replay.get("from") != alias:
        return
    replayed = replay.get("version")
    if replayed != base_version:
        was = f"v{replayed}" if replayed else "unset"
        now = f"v{base_version}" if base_version else "unset"
        raise LineageError(
            f"{cfg.registry.model_name}@{alias} moved between the templates step ({was}: replay.from) and the "
            f"shards step ({now}: model.base), so this run would retrain one version on another's examples. "
            "Start the run again: both steps then read the alias as it is now")


def gated_eval_set(store: Store, tags: dict) -> str | None:
    """The evaluation set a version was gated on (<eval_uri>/eval_set.parquet), if it is still there."""
    eval_uri = tags.get(EVAL_URI_TAG)
    if not eval_uri:
        return None
    uri = join(eval_uri, "eval_set.parquet")
    return uri if store.exists(uri) else None
