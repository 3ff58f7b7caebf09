"""Follow a registry alias: poll where it points, load a new version in the background, warm and
smoke-test it, then swap it in with one reference assignment. A batch that has started keeps the
model it started with, so in-flight requests finish on the old version; the next batch gets the new.

A version that fails to download, load or smoke-test is not swapped in: the old one keeps serving,
the failure is logged and counted (mixtune_serve_model_load_failures), and the version is retried
with a growing delay (a transient S3 error recovers; a broken version does not spin). `mixtune
rollback` moves the alias like any promotion, so it is followed the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from components.serve.metrics import ServeMetrics
from components.serve.models import LoadedModel, ModelLoadError, load_version

log = logging.getLogger("mixtune.serve")
RETRY_MAX_SECONDS = 300.0


class ModelSlot:
    """The model being served. Readers take `current` once per batch; a swap replaces it atomically."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self._lock = threading.Lock()

    def swap(self, new: LoadedModel) -> LoadedModel | None:
        with self._lock:
            old, self.current = self.current, new
        return old


def current_alias_version(name: str, alias: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from components.common.registry import alias_version

    return alias_version(MlflowClient(), name, alias)


class AliasFollower:
    """Keeps `slot` on the version that `which` (an alias, or a fixed version number) names."""

    def __init__(self, name: str, which: str, slot: ModelSlot, metrics: ServeMetrics, cache: Path,
                 poll_seconds: float, lookup: Callable[[str, str], str | None] = current_alias_version,
                 loader: Callable[..., LoadedModel] = load_version):
        self.name, self.which, self.slot, self.metrics = name, which, slot, metrics
        self.alias = None if which.isdigit() else which
        self.cache, self.poll_seconds, self.lookup, self.loader = cache, poll_seconds, lookup, loader
        self.retry_at: dict[str, tuple[float, float]] = {}  # version -> (next attempt, delay)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wanted(self) -> str | None:
        return self.which if self.alias is None else self.lookup(self.name, self.alias)

    def poll_once(self) -> bool:
        """One look at the registry; True when a new version was swapped in."""
        try:
            version = self.wanted()
        except Exception as e:  # registry down: keep serving what we have, try again next poll
            self._failed_lookup(e)
            return False
        current = self.slot.current
        if version is None:
            self.last_error = (f"{self.name} has no alias {self.alias!r} yet: nothing to serve" if current is None
                               else f"the alias {self.alias!r} is gone: v{current.version} keeps serving")
            return False
        if current is not None and current.version == version:
            return False
        next_try, _ = self.retry_at.get(version, (0.0, 0.0))
        if time.monotonic() < next_try:
            return False
        return self._load_and_swap(version)

    def _failed_lookup(self, e: Exception) -> None:
        self.last_error = f"registry lookup failed: {type(e).__name__}: {str(e)[:300]}"
        log.warning("%s (serving %s)", self.last_error,
                    f"v{self.slot.current.version}" if self.slot.current else "nothing")

    def _load_and_swap(self, version: str) -> bool:
        try:
            new = self.loader(self.name, version, self.alias, self.cache)
        except ModelLoadError as e:
            _, delay = self.retry_at.get(version, (0.0, self.poll_seconds / 2))
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            self.retry_at[version] = (time.monotonic() + delay, delay)
            self.metrics.load_failures.labels(version).inc()
            self.last_error = str(e)
            keep = self.slot.current
            log.error("not swapping in v%s: %s; %s; retry in %.0f s", version, e,
                      f"v{keep.version} keeps serving" if keep else "nothing is served yet", delay)
            return False
        old = self.slot.swap(new)
        self.retry_at.pop(version, None)
        self.last_error = None
        self.metrics.swaps.inc()
        self.metrics.load_seconds.set(new.load_seconds)
        self.metrics.served(new.name, new.version, new.alias,
                            None if old is None else (old.name, old.version, old.alias or ""))
        log.info("serving %s v%s%s", new.name, new.version, f" (was v{old.version})" if old else "")
        if old is not None:
            old.drop()
        return True

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            # A fixed version needs no polling once it is served.
            if self.alias is None and self.slot.current is not None:
                return
            self._stop.wait(self.poll_seconds)

    def start(self) -> "AliasFollower":
        self._thread = threading.Thread(target=self.run_forever, name="alias-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
