"""Resumable training checkpoints in S3: every K steps and on SIGTERM, the latest complete one resumed.

A checkpoint is DeepSpeed's own (`engine.save_checkpoint`: module, optimizer and ZeRO partitions, LR
scheduler, step counters) plus mixtune's client state (loader position, loss history), uploaded to
`<root>/step-NNNNNNNN/` with `_COMPLETE` written last by rank 0 after every node uploaded: a run killed
mid-upload leaves no marker, and the previous checkpoint stays the latest. Only markers are trusted;
loading reads DeepSpeed's files that mixtune itself wrote under this prefix.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

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
    if local_rank == 0:
        store.upload_dir(local_dir / tag, join(root, tag))
        shutil.rmtree(local_dir / tag, ignore_errors=True)  # the disk holds one checkpoint at a time
    dist.barrier()  # every node's files are in S3 before the marker
    if dist.get_rank() == 0:
        store.put_bytes(join(root, tag, COMPLETE_MARKER),
                        json.dumps({"step": step, "world_size": dist.get_world_size()}).encode())
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
    if local_rank == 0:
        store.download_dir(join(root, tag), local_dir / tag)
    dist.barrier()
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
