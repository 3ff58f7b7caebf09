"""Preemption and crashes: kill -9 at a random step, or SIGTERM, then rerun the same step: it resumes
from the latest complete checkpoint in S3 and ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from components.common.storage import Store, join
from components.train import checkpoint
from components.train.core import run_train
from components.train.launch import REPO_ROOT

STEPS = 24


def with_train(cfg, **changes):
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=changes)})


def weights(store: Store, model_uri: str, tmp: Path) -> dict:
    return load_file(store.get_file(join(model_uri, "model.safetensors"), tmp / "model.safetensors"))


def start_step(cfg, shards_uri: str, root: str, tmp: Path) -> subprocess.Popen:
    """The train step's own CLI in a new process group, as a pod would run it."""
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "components.train", "--config", str(path), "--shards-uri", shards_uri,
           "--artifact-root", root, "--pipeline-run", "p1"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)


def wait_for_checkpoint(store: Store, root: str, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    ckpts = join(root, "train", "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = checkpoint.latest(store, ckpts)
        if found and found[0] >= step:
            return
        assert proc.poll() is None, f"the step exited ({proc.returncode}) before checkpoint {step}"
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at step >= {step} under {ckpts}")


@pytest.fixture
def cfg(tiny_config):
    # reuse off: every rerun here must train (resume), not take the uninterrupted run's model.
    return with_train(tiny_config, num_processes=2, zero_stage=2, max_steps=STEPS, log_every=4,
                      checkpoint_every=4, micro_batch_size=4, reuse=False)


def wait_for_first_step(cfg, proc: subprocess.Popen, since: float, timeout: float = 240) -> None:
    """Until the train step started after `since` has logged step 1 to MLflow: the ranks are training."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the step exited ({proc.returncode}) before training"
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = client.search_runs([exp.experiment_id], "tags.`mixtune.step` = 'train' and "
                                  f"attributes.start_time > {int(since * 1000)}") if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            return
        time.sleep(0.2)
    raise TimeoutError("the train step logged no step within the timeout")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_kill_9_or_sigterm_then_rerun_equals_uninterrupted(cfg, store, shards_uri, tmp_path, record):
    straight = run_train(cfg, shards_uri, join(store.root, "runs", "straight"), "p1")
    assert store.get_json(join(store.root, "runs", "straight", "train", "train_log.json"))["resumed_from_step"] is None
    uninterrupted = weights(store, straight.model_uri, tmp_path / "straight")

    # kill -9: the step, torchrun and every rank, without warning, at a random step after a checkpoint.
    # The delay is measured in this machine's step time, so the kill lands within ~2 steps of the
    # checkpoint on a fast CI runner as on a slow laptop (a fixed 1.5 s once outlived the whole run).
    step_seconds = store.get_json(join(store.root, "runs", "straight", "train", "train_log.json"))[
        "train_seconds"] / STEPS
    rng = random.Random()
    kill_after, delay = rng.choice([4, 8, 12]), rng.uniform(0.0, 2 * step_seconds)
    print(f"kill -9 after checkpoint {kill_after} + {delay:.2f} s", file=sys.stderr)
    root = join(store.root, "runs", "killed")
    proc = start_step(cfg, shards_uri, root, tmp_path)
    wait_for_checkpoint(store, root, kill_after, proc)
    time.sleep(delay)
    assert proc.poll() is None, "the run finished before the kill: the test's timing assumption broke"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.exists(join(root, "train", "model", "_COMPLETE"))
    done = checkpoint.complete_checkpoints(store, join(root, "train", "checkpoints"))
    assert done and len(done) <= cfg.train.checkpoint_keep  # older ones pruned
    result = run_train(cfg, shards_uri, root, "p1")  # the rerun: same artifact root
    log = store.get_json(join(root, "train", "train_log.json"))
    assert log["resumed_from_step"] >= kill_after and result.steps == STEPS
    assert [h["step"] for h in log["history"]] == [1] + list(range(4, STEPS + 1, 4))  # history carried over
    worst = max_difference(weights(store, result.model_uri, tmp_path / "killed"), uninterrupted)
    record(f"train killed (kill -9) after checkpoint {kill_after} + {delay:.1f} s", "resumes; same final weights",
           f"resumed at step {log['resumed_from_step']}; max |w - w_uninterrupted| = {worst}", worst == 0.0)

    # SIGTERM, as the kubelet sends it to the step's process only: the ranks checkpoint and stop.
    cfg = with_train(cfg, checkpoint_every=0)  # only the SIGTERM checkpoint
    root = join(store.root, "runs", "preempted")
    since = time.time()
    proc = start_step(cfg, shards_uri, root, tmp_path)
    wait_for_first_step(cfg, proc, since)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) != 0  # the step fails, so KFP retries it
    done = checkpoint.complete_checkpoints(store, join(root, "train", "checkpoints"))
    assert len(done) == 1 and 0 < done[0][0] < STEPS, done
    print(f"SIGTERM checkpoint at step {done[0][0]}", file=sys.stderr)
    result = run_train(cfg, shards_uri, root, "p1")
    assert store.get_json(join(root, "train", "train_log.json"))["resumed_from_step"] == done[0][0]
    worst = max_difference(weights(store, result.model_uri, tmp_path / "preempted"), uninterrupted)
    record("train preempted (SIGTERM)", "checkpoints, exits non-zero; rerun resumes; same weights",
           f"checkpoint at step {done[0][0]}, resumed there; max |w - w_uninterrupted| = {worst}", worst == 0.0)
