"""Resumable training checkpoints in S3: every K steps and on SIGTERM, the latest complete one resumed.

A checkpoint is DeepSpeed's own (`engine.save_checkpoint`: module, optimizer and ZeRO partitions, LR
scheduler, step counters) plus mixtune's client state (loader position, loss history), uploaded to
`<root>/step-NNNNNNNN/` with `_COMPLETE` written last by rank 0 after every node uploaded: a run killed
mid-upload leaves no marker, and the previous checkpoint stays the latest. Only markers are trusted;
loading reads DeepSpeed's files that mixtune itself wrote under this prefix.

DeepSpeed's files are pickles (`engine.load_checkpoint` unpickles them with torch.load(weights_only=False)),
so the marker lists the sha256 of every file the ranks wrote, and `restore` loads a checkpoint only when
the downloaded files are exactly those: an altered, missing or extra file is refused before DeepSpeed
reads anything. A checkpoint whose marker lists no sha256s (an older mixtune) is refused too.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path, PurePosixPath

import torch.distributed as dist

from components.common.storage import COMPLETE_MARKER, Store, join

TAG = re.compile(r"/(step-(\d{8}))/" + re.escape(COMPLETE_MARKER) + "$")


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(store: Store, root: str) -> list[tuple[int, str]]:
    """(step, tag) of every checkpoint under root whose marker exists, oldest first."""
    found = []
    for uri, _ in store.list(root):
        m = TAG.search(uri)
        if m:
            found.append((int(m.group(2)), m.group(1)))
    return sorted(found)


def latest(store: Store, root: str) -> tuple[int, str] | None:
    done = complete_checkpoints(store, root)
    return done[-1] if done else None


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory, keyed by its path relative to it ('/'-separated)."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[PurePosixPath(path.relative_to(directory)).as_posix()] = h.hexdigest()
    return out


def merge_digests(parts: list[dict[str, str]], ckpt_uri: str) -> dict[str, str]:
    """One listing from every node's: a file two nodes uploaded with different bytes is an error."""
    merged: dict[str, str] = {}
    for part in parts:
        for rel, digest in part.items():
            if merged.setdefault(rel, digest) != digest:
                raise RuntimeError(f"{join(ckpt_uri, rel)}: two nodes wrote this file with different contents")
    return merged


def expected_digests(marker: dict, ckpt_uri: str) -> dict[str, str]:
    """The sha256 of every checkpoint file, as the marker lists them; a marker without them is refused."""
    digests = marker.get("sha256")
    if not isinstance(digests, dict) or not digests:
        raise ValueError(
            f"{join(ckpt_uri, COMPLETE_MARKER)} lists no sha256 of the checkpoint's files (written by an older "
            "mixtune): DeepSpeed checkpoints are pickles and are loaded only when every file is verified, so this "
            "one is not resumed; set train.resume: false to start over (or delete the checkpoint)")
    return digests


def verify_files(local: Path, expected: dict[str, str], ckpt_uri: str) -> None:
    """Refuse (ValueError naming the object) a downloaded checkpoint whose files are not exactly the
    marker's: a file altered, missing, or not listed. The downloaded marker itself is not a checkpoint file."""
    found = {rel: d for rel, d in file_digests(local).items() if rel != COMPLETE_MARKER}
    problems = [f"{join(ckpt_uri, rel)}: not listed in {COMPLETE_MARKER}" for rel in sorted(found.keys() - expected)]
    problems += [f"{join(ckpt_uri, rel)}: missing (listed in {COMPLETE_MARKER})"
                 for rel in sorted(expected.keys() - found)]
    problems += [f"{join(ckpt_uri, rel)}: sha256 {found[rel][:12]}... differs from {expected[rel][:12]}... in "
                 f"{COMPLETE_MARKER}" for rel in sorted(found.keys() & expected.keys()) if found[rel] != expected[rel]]
    if problems:
        raise ValueError(f"checkpoint {ckpt_uri} refused before loading (DeepSpeed would unpickle it): "
                         + "; ".join(problems) + ". Delete it, or set train.resume: false to start over")


def fetch_verified(store: Store, ckpt_uri: str, target: Path, expected: dict[str, str]) -> Path:
    """Download a checkpoint into target (emptied first: a leftover file must not pass for a download)
    and verify it against the marker's sha256s; on a mismatch target is removed and ValueError raised."""
    shutil.rmtree(target, ignore_errors=True)
    store.download_dir(ckpt_uri, target)
    try:
        verify_files(target, expected, ckpt_uri)
    except ValueError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _all_ranks_ok(error: BaseException | None) -> None:
    """Collective: raise on every rank when any rank failed (so none waits forever in a barrier)."""
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [e for e in errors if e]
    if failed:
        raise RuntimeError(f"another rank failed to fetch the checkpoint: {failed[0]}")


def save(engine, store: Store, root: str, step: int, client_state: dict, local_dir: Path,
         keep: int, local_rank: int, frozen: bool = True) -> str:
    """Collective: every rank writes its part; each node's local rank 0 uploads the node's files;
    rank 0 marks the checkpoint complete, then deletes all but the newest `keep`.
    frozen=False leaves out parameters that do not train (LoRA: the base stays in the base model)."""
    tag = tag_for(step)
    # A marker left from an earlier attempt at this same step would make a half upload look complete.
    if dist.get_rank() == 0 and store.exists(join(root, tag, COMPLETE_MARKER)):
        store.delete_prefix(join(root, tag))
    dist.barrier()
    engine.save_checkpoint(str(local_dir), tag=tag, client_state=client_state,
                           exclude_frozen_parameters=not frozen)
    dist.barrier()
    digests: dict[str, str] = {}
    if local_rank == 0:
        digests = file_digests(local_dir / tag)  # what restore will accept, hashed before the upload
        store.upload_dir(local_dir / tag, join(root, tag))
        shutil.rmtree(local_dir / tag, ignore_errors=True)  # the disk holds one checkpoint at a time
    # A collective, so also the barrier: every node's files are in S3 before the marker.
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, digests)
    if dist.get_rank() == 0:
        store.put_bytes(join(root, tag, COMPLETE_MARKER), json.dumps({
            "step": step, "world_size": dist.get_world_size(),
            "sha256": merge_digests(parts, join(root, tag))}).encode())
        for _, old in complete_checkpoints(store, root)[:-keep]:
            store.delete_prefix(join(root, old))
    return join(root, tag)


def restore(engine, store: Store, root: str, local_dir: Path, local_rank: int, strict: bool = True) -> dict | None:
    """Collective: load the latest complete checkpoint into the engine; its client state, or None.
    strict=False accepts a checkpoint without frozen parameters (LoRA), which the base model supplies."""
    found = latest(store, root)
    if found is None:
        return None
    step, tag = found
    marker = store.get_json(join(root, tag, COMPLETE_MARKER))
    if marker.get("world_size") != dist.get_world_size():
        raise ValueError(f"{join(root, tag)} was written by {marker.get('world_size')} processes, this run has "
                         f"{dist.get_world_size()}: resume with the same train.num_processes, or set "
                         "train.resume: false to start over")
    expected = expected_digests(marker, join(root, tag))  # every rank reads the marker: all refuse alike
    error = None
    if local_rank == 0:
        try:
            fetch_verified(store, join(root, tag), local_dir / tag, expected)
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error = e
    _all_ranks_ok(error)  # also the barrier: the node's files are verified before any rank loads them
    path, client_state = engine.load_checkpoint(str(local_dir), tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True, load_module_strict=strict)
    if path is None:
        raise RuntimeError(f"{join(root, tag)}: DeepSpeed could not load this checkpoint")
    if engine.global_steps != step:
        raise RuntimeError(f"{join(root, tag)}: engine is at step {engine.global_steps} after loading, expected {step}")
    dist.barrier()
    if local_rank == 0:
        shutil.rmtree(local_dir / tag, ignore_errors=True)
    return client_state
