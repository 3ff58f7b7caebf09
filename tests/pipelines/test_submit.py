"""`mixtune submit`: the trigger's exactly-once claim on a batch of files (real S3 server), the run
it starts, and the KFP recurring run. No KFP server can run here: a recording client stands in for
kfp.Client's four calls, and checks each package it is handed is a real compiled pipeline."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import yaml
from kfp.pipeline_spec import pipeline_spec_pb2

from components.common.config import SourceConfig
from components.common.storage import Store, join
from pipelines.submit import SubmitError, kfp_cron, schedule, submit, submit_if_new
from pipelines.trigger import claim_uri, fingerprint, settled_listing, source_listing


class RecordingKfp:
    """The slice of kfp.Client that submit uses, recording what it was asked."""

    def __init__(self, fail: bool = False):
        self.runs, self.recurring, self.fail, self.created = [], [], fail, 0
        self.lock = threading.Lock()

    def create_experiment(self, name, namespace=None):
        return SimpleNamespace(experiment_id=f"exp-{name}")

    @staticmethod
    def _parse(package: str) -> dict:
        doc = next(yaml.safe_load_all(open(package)))
        spec = pipeline_spec_pb2.PipelineSpec()
        from google.protobuf import json_format

        json_format.ParseDict(doc, spec)  # strict: unknown fields raise
        return doc

    def create_run_from_pipeline_package(self, package, arguments, run_name, experiment_id, service_account):
        if self.fail:
            raise ConnectionError("KFP API unreachable")
        doc = self._parse(package)
        with self.lock:
            self.runs.append(dict(arguments=arguments, run_name=run_name, experiment_id=experiment_id,
                                  service_account=service_account, params=doc["root"]["inputDefinitions"]))
            return SimpleNamespace(run_id=f"run-{len(self.runs)}")

    def list_recurring_runs(self, experiment_id, page_size):
        return SimpleNamespace(recurring_runs=[SimpleNamespace(display_name=r["name"], recurring_run_id=r["id"])
                                               for r in self.recurring])

    def delete_recurring_run(self, recurring_run_id):
        self.recurring = [r for r in self.recurring if r["id"] != recurring_run_id]

    def create_recurring_run(self, experiment_id, job_name, **kw):
        doc = self._parse(kw["pipeline_package_path"])
        self.created += 1
        self.recurring.append(dict(name=job_name, id=f"rr-{self.created}", params=kw["params"],
                                   cron=kw["cron_expression"], max_concurrency=kw["max_concurrency"],
                                   inputs=list(doc["root"]["inputDefinitions"]["parameters"])))
        return SimpleNamespace(recurring_run_id=self.recurring[-1]["id"])


@pytest.fixture
def watched(tiny_config, store):
    """A config watching an incoming/ prefix with two chat-log files in it, no settle wait."""
    incoming = join(store.root, "incoming", "chatlogs")
    for name in ("a.jsonl", "b.jsonl"):
        store.put_bytes(join(incoming, name), b'{"conversation_id": "1"}\n')
    cluster = tiny_config.cluster.model_copy(update={"trigger": tiny_config.cluster.trigger.model_copy(
        update={"settle_seconds": 0})})
    data = tiny_config.data.model_copy(update={"sources": [SourceConfig(path=incoming + "/", format="chatlog")]})
    return tiny_config.model_copy(update={"cluster": cluster, "data": data}), incoming


def test_new_files_start_one_run_and_the_same_files_start_none(watched, store):
    cfg, incoming = watched
    kfp = RecordingKfp()
    first = submit_if_new(cfg, kfp, store)
    assert first.started and first.files == 2 and kfp.runs[0]["run_name"] == first.run_name
    assert kfp.runs[0]["arguments"]["pipeline_run"] == first.run_name
    assert kfp.runs[0]["service_account"] == cfg.cluster.service_account
    assert store.get_json(first.claim_uri)["run_id"] == first.run_id

    again = submit_if_new(cfg, kfp, store)  # a second event for the same files
    assert not again.started and again.run_name == first.run_name and len(kfp.runs) == 1

    store.put_bytes(join(incoming, "c.jsonl"), b'{"conversation_id": "2"}\n')
    third = submit_if_new(cfg, kfp, store)
    assert third.started and third.files == 3 and third.fingerprint != first.fingerprint and len(kfp.runs) == 2


def test_concurrent_events_for_the_same_files_start_exactly_one_run(watched, store):
    cfg, _ = watched
    kfp = RecordingKfp()
    results, barrier = [], threading.Barrier(6)

    def event():
        barrier.wait()
        results.append(submit_if_new(cfg, kfp, Store(cfg.storage)))

    threads = [threading.Thread(target=event) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.started for r in results) == 1 and len(kfp.runs) == 1
    assert len({r.fingerprint for r in results}) == 1


def test_a_failed_submission_releases_its_claim_so_the_retry_can_start_the_run(watched, store):
    cfg, _ = watched
    with pytest.raises(SubmitError, match="cannot reach the KFP API"):
        submit_if_new(cfg, RecordingKfp(fail=True), store)
    fp = fingerprint(source_listing(cfg, store))
    assert not store.exists(claim_uri(cfg, store, fp))
    kfp = RecordingKfp()
    assert submit_if_new(cfg, kfp, store).started and len(kfp.runs) == 1


def test_a_missing_source_prefix_is_a_clear_error(tiny_config, store):
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"sources": [SourceConfig(path=join(store.root, "nothing-here") + "/", format="chatlog")]})})
    with pytest.raises(SubmitError, match="nothing-here"):
        submit_if_new(cfg, RecordingKfp(), store)


def test_settle_waits_until_two_listings_agree():
    listings = iter([[1], [1, 2], [1, 2, 3], [1, 2, 3]])
    slept = []
    assert settled_listing(lambda: next(listings), 5, 100, sleep=slept.append, clock=lambda: 0) == [1, 2, 3]
    assert slept == [5, 5, 5]
    growing = iter(range(100))
    with pytest.raises(SubmitError, match="still changing"):
        settled_listing(lambda: [next(growing)], 5, 10, sleep=lambda s: None, clock=iter(range(0, 100, 6)).__next__)


def test_manual_submit_passes_the_config_and_run_name(tiny_config):
    kfp = RecordingKfp()
    result = submit(tiny_config, kfp, run_name="nightly-1")
    [run] = kfp.runs
    assert result.run_id == "run-1" and run["run_name"] == "nightly-1"
    assert run["arguments"] == {"config_json": tiny_config.model_dump_json(), "pipeline_run": "nightly-1"}
    assert set(run["params"]["parameters"]) == {"config_json", "pipeline_run", "artifact_root"}


def test_schedule_creates_one_recurring_run_of_the_scheduled_variant(tiny_config):
    kfp = RecordingKfp()
    created = schedule(tiny_config, kfp)
    assert created.started
    [rr] = kfp.recurring
    assert rr["inputs"] == ["config_json"] and rr["params"] == {"config_json": tiny_config.model_dump_json()}
    assert rr["cron"] == "0 0 3 * * *" and rr["max_concurrency"] == 1
    again = schedule(tiny_config, kfp)
    assert not again.started and len(kfp.recurring) == 1
    replaced = schedule(tiny_config, kfp, replace=True)
    assert replaced.started and len(kfp.recurring) == 1 and replaced.run_id != created.run_id


def test_cron_gets_kfps_seconds_field():
    assert kfp_cron("*/15 * * * *") == "0 */15 * * * *"
    assert kfp_cron("30 0 3 * * *") == "30 0 3 * * *"


def test_cli_names_the_kfp_host_it_cannot_reach(capsys):
    from pipelines.cli import main
    from pipelines.embedded import free_ports

    host = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    assert main(["submit", "--set", f"cluster.kfp_host={host}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the KFP API at {host}" in err and "Traceback" not in err
