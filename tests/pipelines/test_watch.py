"""`mixtune watch` on a real S3 server: one run per batch however many watchers look, a failed run kept
FAILED and not retried, uploads during the settle wait in the same batch. run_fn stands in for the DAG
(no model is trained here); it records the config each run was given."""
from __future__ import annotations

import threading
import time

import pytest

from components.common.config import MixtuneConfig, parse_config
from components.common.storage import join
from pipelines import watch as watch_module
from pipelines.cli import main
from pipelines.watch import watch

CHAT = b'{"conversation_id": "1"}\n'


class Runs:
    """A run_fn that records which chat-log files each run's config reads, and takes a while."""

    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.seconds, self.fail, self.calls, self.lock = seconds, fail, [], threading.Lock()

    def __call__(self, cfg: MixtuneConfig) -> dict:
        with self.lock:
            self.calls.append(sorted(s.path.rsplit("/", 1)[-1] for s in cfg.data.sources if s.name == "chats"))
            n = len(self.calls)
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("Task 'train' finished with status FAILURE: \x1b[91mloss is nan\x1b[0m")
        return {"pipeline_run": f"run-{n}", "dataset_version": f"ds{n}",
                "registered": {"name": "m", "version": str(n), "aliases": ["champion"], "new": True}}


@pytest.fixture
def watched(tiny_config, store):
    """new_files_only on incoming/chats (two files there); public task data beside it, not watched."""
    incoming, public = join(store.root, "incoming", "chats"), join(store.root, "public")
    for name in ("a.jsonl", "b.jsonl"):
        store.put_bytes(join(incoming, name), CHAT)
    store.put_bytes(join(public, "train.jsonl"), b'{"id": "p1"}\n')
    raw = tiny_config.model_dump(mode="json", by_alias=True)
    raw["data"]["sources"] = [{"path": incoming + "/", "name": "chats"},
                              {"path": public + "/", "format": "dialogsum", "name": "public"}]
    raw["cluster"]["trigger"].update(settle_seconds=0, poll_seconds=5, watch_sources=["chats"], new_files_only=True)
    return parse_config(raw), incoming


def with_trigger(cfg: MixtuneConfig, **update) -> MixtuneConfig:
    trigger = cfg.cluster.trigger.model_copy(update=update)
    return cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"trigger": trigger})})


def test_two_watchers_on_one_prefix_run_each_batch_once(watched, store, tmp_path, monkeypatch):
    cfg, incoming = watched
    # Both watchers reach the claim with the same batch in hand (neither has seen the other's claim yet).
    at_claim, real_claim = threading.Barrier(2, timeout=30), watch_module.claim
    monkeypatch.setattr(watch_module, "claim", lambda *a, **k: (at_claim.wait(), real_claim(*a, **k))[1])
    runs, logs, results = Runs(seconds=0.3), [[], []], [None, None]

    def watcher(i: int) -> None:
        results[i] = watch(cfg, tmp_path, run_fn=runs, once=True, log=logs[i].append)

    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs.calls == [["a.jsonl", "b.jsonl"]]
    [winner] = [r for r in results if r]
    [loser_log] = [log for log, r in zip(logs, results) if not r]
    assert winner[0]["status"] == "FINISHED" and winner[0]["run_name"] == "run-1"
    assert len(loser_log) == 1 and "claimed by another watcher" in loser_log[0]

    claim = store.get_json(winner[0]["claim_uri"])
    assert claim["status"] == "FINISHED" and claim["run_name"] == "run-1" and claim["runner"] == "mixtune watch"
    assert claim["registered_version"] == "1" and claim["promoted"] is True and claim["dataset_version"] == "ds1"
    assert claim["files"] == [join(incoming, "a.jsonl"), join(incoming, "b.jsonl")]

    # A second upload: exactly one more run, on the new file only (the public source still read in full).
    monkeypatch.setattr(watch_module, "claim", real_claim)
    store.put_bytes(join(incoming, "c.jsonl"), CHAT)
    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs.calls == [["a.jsonl", "b.jsonl"], ["c.jsonl"]]
    assert sum(len(r) for r in results) == 1
    # Nothing new: a third look runs nothing.
    assert watch(cfg, tmp_path, run_fn=runs, once=True, log=lambda line: None) == [] and len(runs.calls) == 2


@pytest.mark.parametrize("new_files_only", [True, False])
def test_a_failed_run_is_recorded_and_not_retried(watched, store, tmp_path, new_files_only):
    cfg, _ = watched
    cfg = with_trigger(cfg, new_files_only=new_files_only)
    logs = []
    [record] = watch(cfg, tmp_path, run_fn=Runs(fail=True), once=True, log=logs.append)
    assert record["status"] == "FAILED" and "loss is nan" in record["error"] and "\x1b" not in record["error"]
    claim = store.get_json(record["claim_uri"])
    assert claim["status"] == "FAILED" and "loss is nan" in claim["error"]
    assert logs == [f"{record['fingerprint'][:8]}: FAILED on 2 files: {record['error']}; not retried: "
                    f"delete {record['claim_uri']} to run this batch again"]

    again = Runs()
    assert watch(cfg, tmp_path, run_fn=again, once=True, log=logs.append) == [] and again.calls == []
    store.delete(record["claim_uri"])  # what the line says to do
    [retried] = watch(cfg, tmp_path, run_fn=again, once=True, log=logs.append)
    assert retried["status"] == "FINISHED" and len(again.calls) == 1


def test_uploads_during_the_settle_wait_join_the_batch(watched, store, tmp_path):
    cfg, incoming = watched
    cfg = with_trigger(cfg, settle_seconds=7)
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # the burst goes on while the watcher waits
            store.put_bytes(join(incoming, "late.jsonl"), CHAT)

    runs = Runs()
    [record] = watch(cfg, tmp_path, run_fn=runs, once=True, sleep=sleep, log=lambda line: None)
    assert runs.calls == [["a.jsonl", "b.jsonl", "late.jsonl"]] and len(record["files"]) == 3
    assert slept == [7, 7]  # the second listing changed, the third agreed with it


def test_the_loop_polls_until_ctrl_c(tiny_config, store, tmp_path):
    """The prefix is empty at first (said once), files arrive between polls, Ctrl-C stops it cleanly."""
    incoming = join(store.root, "incoming", "chats")
    raw = tiny_config.model_dump(mode="json", by_alias=True)
    raw["data"]["sources"] = [{"path": incoming + "/", "name": "chats"}]
    raw["cluster"]["trigger"].update(settle_seconds=0, poll_seconds=3, new_files_only=True)
    cfg = parse_config(raw)
    polls, logs, runs = [], [], Runs()

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) in (2, 3):
            store.put_bytes(join(incoming, f"{len(polls)}.jsonl"), CHAT)
        if len(polls) == 5:
            raise KeyboardInterrupt

    records = watch(cfg, tmp_path, run_fn=runs, sleep=sleep, log=logs.append)
    assert polls == [3] * 5 and runs.calls == [["2.jsonl"], ["3.jsonl"]] and len(records) == 2
    assert sum("cannot list the sources" in line for line in logs) == 1
    assert logs[-1] == "mixtune watch: stopped (2 runs)"

    store.put_bytes(join(incoming, "4.jsonl"), CHAT)
    store.put_bytes(join(incoming, "5.jsonl"), CHAT)
    assert len(watch(cfg, tmp_path, run_fn=runs, max_runs=1, sleep=lambda s: None, log=logs.append)) == 1
    assert runs.calls[-1] == ["4.jsonl", "5.jsonl"]


def test_the_default_run_is_run_local_on_the_running_s3_server(watched, store, tmp_path, monkeypatch):
    cfg, _ = watched
    seen = {}

    def fake_run_local(run_cfg, workdir, embedded_s3, pipeline_run, verbose):
        seen.update(workdir=workdir, embedded_s3=embedded_s3, pipeline_run=pipeline_run, verbose=verbose)
        return {"pipeline_run": pipeline_run, "registered": None}

    monkeypatch.setattr(watch_module, "run_local", fake_run_local)
    [record] = watch(cfg, tmp_path, once=True, log=lambda line: None, verbose=False)
    assert seen == {"workdir": tmp_path, "embedded_s3": False, "pipeline_run": record["run_name"], "verbose": False}
    assert record["run_name"].startswith("mixtune-") and record["run_name"].endswith(record["fingerprint"][:8])
    assert store.get_json(record["claim_uri"])["run_name"] == record["run_name"]


def test_cli_refuses_to_watch_the_generated_sample(capsys):
    assert main(["watch", "--once"]) == 1  # the default source is `sample`: no upload ever lands there
    assert "generated `sample`" in capsys.readouterr().err
    assert main(["watch", "--max-runs", "0"]) == 2
    assert "--max-runs must be at least 1" in capsys.readouterr().err


def test_upload_puts_files_where_the_watcher_looks(tmp_path, capsys):
    """`mixtune upload` starts the state folder's S3 server, as watch does, and the objects outlive it."""
    from pipelines.embedded import LocalS3

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"storage: {{bucket: mixtune}}\ntracking: {{uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n")
    chats = tmp_path / "chats-1.jsonl"
    chats.write_bytes(CHAT)
    state = tmp_path / "state"
    assert main(["upload", "--config", str(cfg), "--workdir", str(state), "--to", "incoming/chatlogs/",
                 str(chats)]) == 0
    assert "-> s3://mixtune/incoming/chatlogs/chats-1.jsonl" in capsys.readouterr().out
    with LocalS3(state / "s3") as s3:
        body = s3.client().get_object(Bucket="mixtune", Key="incoming/chatlogs/chats-1.jsonl")["Body"].read()
    assert body == CHAT
    assert main(["upload", "--config", str(cfg), "--workdir", str(state), "--to", "x/", "missing.jsonl"]) == 2
    assert "not a file: missing.jsonl" in capsys.readouterr().err
