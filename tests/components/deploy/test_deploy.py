"""The deploy step against a fake Kubernetes API (a scripted KServe controller), a fake server and a fake
clock, with a real SQLite MLflow registry and real S3: the exact requests, the wait, the smoke request,
taking all traffic, and the undo when the new version does not come up (alias and InferenceService back)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pytest
from kubernetes.client.exceptions import ApiException
from mlflow.tracking import MlflowClient

from components.common.registry import REPLACED_TAG
from components.common.storage import join
from components.common.tracking import MODEL_URI_TAG
from components.deploy import manifest as m
from components.deploy.core import AUDIT_TAG, FAILED_TAG, deploy_champion, redeploy
from components.deploy.rollout import SMOKE_DIALOGUE, DeployError, Io
from tests.components.deploy.fakes import LOCAL, NAME, FakeKServe, FakeServer, deployment_ready, knative
from tests.components.train.test_kubeflow import Clock


@pytest.fixture(scope="module")
def empty_registry_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made once: creating them is most of a test's time."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def registry(tiny_config, store, empty_registry_db):
    """versions(n): register n versions with complete prefixes, each promoted over the one before."""
    shutil.copyfile(empty_registry_db, tiny_config.tracking.uri.removeprefix("sqlite:///"))
    mlflow.set_tracking_uri(tiny_config.tracking.uri)
    client = MlflowClient()
    client.create_registered_model(NAME)

    def versions(n: int) -> list[m.Target]:
        made = []
        for i in range(1, n + 1):
            uri = join(store.root, "runs", f"r{i}", "train", "model")
            store.put_bytes(join(uri, "_COMPLETE"), b"")
            replaced = str(i - 1) if i > 1 else "none"
            client.create_model_version(NAME, uri, tags={MODEL_URI_TAG: uri, REPLACED_TAG: replaced})
            made.append(m.Target(NAME, str(i), uri))
        client.set_registered_model_alias(NAME, "champion", str(n))
        return made

    return client, versions


def champion(client: MlflowClient) -> str | None:
    version = client.get_registered_model(NAME).aliases.get("champion")
    return None if version is None else str(version)


def config(tiny_config, **serve):
    cfg = tiny_config.model_copy(deep=True)
    cfg.serve.kubernetes = cfg.serve.kubernetes.model_copy(update={"enabled": True, **serve})
    return cfg


def run(cfg, api, server=None, version="2", deploy=deploy_champion, in_cluster=True):
    clock, server = Clock(), server or FakeServer(api)
    io = Io(api=api, post=server, clock=clock, sleep=clock.sleep, log=lambda line: None, in_cluster=in_cluster)
    result = deploy(cfg, version, "run-9", io) if deploy is deploy_champion else deploy(cfg, version, io)
    return result, clock, server


def test_serverless_canary_then_smoke_then_all_traffic(tiny_config, registry):
    client, versions = registry
    v1, v2 = versions(2)
    cfg = config(tiny_config)
    # The first read is the existence check; then the controller has not seen the patch, then the new
    # revision is still coming up, then it is ready with 10% of the traffic.
    api = FakeKServe([knative("p-00001"), knative("p-00002", stale=True), knative("p-00001", created="p-00002"),
                      knative("p-00002")], existing=m.inference_service(cfg, v1))
    result, clock, server = run(cfg, api)

    first, second = api.patches
    container = m.inference_service(cfg, v1)["spec"]["predictor"]["containers"][0]
    assert first == {"metadata": {"annotations": {
        "serving.kserve.io/deploymentMode": "Knative", "serving.kserve.io/enable-tag-routing": "true",
        "mixtune.io/model-version": "2", "mixtune.io/model-uri": v2.model_uri}},
        "spec": {"predictor": {
            "serviceAccountName": "mixtune-serve", "minReplicas": 1, "maxReplicas": 3, "canaryTrafficPercent": 10,
            "containers": [{**container, "env": [
                {"name": "STORAGE_URI", "value": v2.model_uri}, {"name": "MIXTUNE_MODEL_NAME", "value": NAME},
                {"name": "MIXTUNE_MODEL_VERSION", "value": "2"}]}]}}}
    assert second == {"spec": {"predictor": {"canaryTrafficPercent": None}}}  # all traffic to the new revision
    assert api.created == []
    # Ready only once the controller saw the patch and the new revision is ready and routed; then the
    # smoke request goes to that revision's own route (tag `latest`), in the cluster.
    assert server.calls == [(f"http://latest-{NAME}-predictor.mixtune.svc.cluster.local/invocations",
                             {"inputs": [SMOKE_DIALOGUE]})]
    assert clock.sleeps == [10.0, 10.0] and result.ready_seconds == 20.0
    assert (result.version, result.revision, result.replaced) == ("2", "p-00002", "1")
    assert result.url == f"http://{NAME}.mixtune.example.com" and result.prediction == "The customer got a replacement."
    assert champion(client) == "2"
    [step] = client.search_runs([client.get_experiment_by_name("test").experiment_id], "tags.`mixtune.step` = 'deploy'")
    assert step.data.params["version"] == "2" and step.data.metrics["deployed"] == 1.0


def test_standard_mode_rolls_the_deployment_and_waits_for_the_new_pods(tiny_config, registry):
    _, versions = registry
    v1, v2 = versions(2)
    cfg = config(tiny_config, mode="standard")
    api = FakeKServe([deployment_ready], existing=m.inference_service(cfg, v1))
    # Old pods keep answering during the rolling update: the step waits until the new version does.
    result, clock, server = run(cfg, api, FakeServer(api, versions=["1", "1"]))
    [patch] = api.patches  # no canary, no traffic step: the rolling update moves the traffic
    predictor = patch["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["deploymentStrategy"] == {"type": "RollingUpdate",
                                               "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert patch["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert m.TAG_ROUTING_ANNOTATION not in patch["metadata"]["annotations"]
    assert {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}["STORAGE_URI"] == v2.model_uri
    assert [url for url, _ in server.calls] == [f"{LOCAL}/invocations"] * 3 and clock.sleeps == [10.0, 10.0]
    assert result.version == "2" and result.revision == ""


def test_creates_the_inferenceservice_when_there_is_none(tiny_config, registry):
    _, versions = registry
    [v1] = versions(1)
    cfg = config(tiny_config)
    api = FakeKServe([knative("p-00001")])
    result, _, server = run(cfg, api, version="1")
    assert api.created == [m.inference_service(cfg, v1)] and api.patches == []  # nothing to protect: no canary
    assert "canaryTrafficPercent" not in api.created[0]["spec"]["predictor"]
    assert api.created[0]["metadata"]["namespace"] == "mixtune" and len(server.calls) == 1
    assert (result.version, result.replaced) == ("1", "none")


def test_not_ready_in_time_moves_alias_and_inferenceservice_back(tiny_config, registry):
    client, versions = registry
    v1, _ = versions(2)
    cfg = config(tiny_config, ready_timeout_seconds=300)
    failing = ("False", "RevisionFailed", "Revision p-00002 failed: Back-off pulling image mixtune/cpu:9.9")
    api = FakeKServe([knative("p-00001", created="p-00002", ready=False, failing=failing)],
                     existing=m.inference_service(cfg, v1))
    with pytest.raises(DeployError) as err:
        run(cfg, api)
    message = str(err.value)
    assert message.startswith(f"deploy of {NAME} v2 failed: InferenceService mixtune/{NAME} did not come up "
                              "within 300 s: not Ready: PredictorReady=False (RevisionFailed: Revision p-00002 "
                              "failed: Back-off pulling image mixtune/cpu:9.9)")
    assert f"the InferenceService is back on v1 ({v1.model_uri})" in message
    assert message.endswith("the champion alias is back on v1")
    assert api.gets == 1 + 31  # the existence check, then polls at 0, 10, ..., 300 s
    # Back to v1 at once: all traffic on the last rolled-out revision (canary 0), v1's prefix and version.
    restored = api.patches[-1]
    assert restored == m.version_patch(cfg, v1, 0) and len(api.patches) == 2
    assert restored["spec"]["predictor"]["canaryTrafficPercent"] == 0 and m.served_version(api.obj) == "1"
    assert champion(client) == "1"
    assert "RevisionFailed" in client.get_model_version(NAME, "2").tags[FAILED_TAG]
    audit = json.loads(client.get_registered_model(NAME).tags[AUDIT_TAG])
    assert (audit["action"], audit["from"], audit["to"]) == ("deploy-failed", "2", "1")
    parent = client.search_runs([client.get_experiment_by_name("test").experiment_id],
                                "tags.`mixtune.role` = 'pipeline'")[0]
    assert parent.info.status == "FAILED"


def test_a_version_that_answers_wrong_is_not_served(tiny_config, registry):
    client, versions = registry
    v1, _ = versions(2)
    cfg = config(tiny_config, ready_timeout_seconds=60)
    api = FakeKServe([knative("p-00002")], existing=m.inference_service(cfg, v1))
    with pytest.raises(DeployError, match=r"Ready, but the smoke request failed: .*/invocations answered HTTP 500"):
        run(cfg, api, FakeServer(api, status=500))
    assert m.served_version(api.obj) == "1" and champion(client) == "1"


def test_first_champion_that_does_not_come_up_loses_the_alias(tiny_config, registry):
    client, versions = registry
    versions(1)
    cfg = config(tiny_config, ready_timeout_seconds=30)
    api = FakeKServe([knative("p-00001", ready=False, failing=("Unknown", "RevisionMissing", "creating"))])
    with pytest.raises(DeployError, match="nothing to put the InferenceService back to: it is left as it is; "
                                          "v1 was the first champion: the champion alias is removed"):
        run(cfg, api, version="1")
    assert "champion" not in client.get_registered_model(NAME).aliases


def test_a_refused_patch_changes_nothing_but_the_alias(tiny_config, registry):
    client, versions = registry
    v1, _ = versions(2)
    cfg = config(tiny_config)
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"message": 'inferenceservices.serving.kserve.io "x" is forbidden: cannot patch'})
    api = FakeKServe([knative("p-00001")], existing=m.inference_service(cfg, v1), patch_error=forbidden)
    with pytest.raises(DeployError, match=r"could not patch InferenceService mixtune/mixtune-summarizer: HTTP 403 "
                                          r"Forbidden: .*cannot patch\. the InferenceService was not changed; "
                                          r"the champion alias is back on v1"):
        run(cfg, api)
    assert api.patches == [] and m.served_version(api.obj) == "1" and champion(client) == "1"


def test_read_errors_while_waiting_are_ridden_out(tiny_config, registry):
    _, versions = registry
    v1, _ = versions(2)
    cfg = config(tiny_config)
    api = FakeKServe([ApiException(status=503, reason="Unavailable")] * 3 + [knative("p-00002")],
                     existing=m.inference_service(cfg, v1))
    # The existence check reads once too: it takes the first scripted answer, so it sees a 503.
    api.statuses.insert(0, knative("p-00001"))
    result, clock, _ = run(cfg, api)
    assert result.revision == "p-00002" and clock.sleeps == [10.0, 10.0, 10.0]


def test_nothing_is_deployed_when_the_champion_moved_on(tiny_config, registry):
    _, versions = registry
    versions(3)
    api = FakeKServe([knative("p-00001")])
    result, _, server = run(config(tiny_config), api, version="2")
    assert result.skipped == "the champion is v3, not v2" and api.gets == 0 and server.calls == []


def test_redeploy_for_rollback_and_its_undo(tiny_config, registry):
    client, versions = registry
    _, v2 = versions(2)
    client.set_registered_model_alias(NAME, "champion", "1")  # what `mixtune rollback` did first
    cfg = config(tiny_config)
    api = FakeKServe([knative("p-00003")], existing=m.inference_service(cfg, v2))
    result, _, server = run(cfg, api, version="1", deploy=redeploy, in_cluster=False)  # from a laptop
    assert [p["spec"]["predictor"].get("canaryTrafficPercent") for p in api.patches] == [10, None]
    assert m.served_version(api.obj) == "1" and (result.version, result.replaced) == ("1", "2")
    # Outside the cluster the smoke request takes the tagged URL from the status (through the ingress).
    assert server.calls[0][0] == f"http://latest-{NAME}-predictor.mixtune.example.com/invocations"

    # Rolling back to a version that does not come up: the InferenceService goes back to what it
    # served, and the alias is the caller's to decide.
    cfg = config(tiny_config, ready_timeout_seconds=20)
    api = FakeKServe([knative("p-00003", created="p-00004", ready=False, failing=("False", "ExitCode1", "boom"))],
                     existing=m.inference_service(cfg, v2))
    with pytest.raises(DeployError, match=r"redeploy of mixtune-summarizer v1 failed: .*ExitCode1: boom.* the "
                                          r"InferenceService is back on v2 .*alias was not changed \(it names v1\)"):
        run(cfg, api, version="1", deploy=redeploy)
    assert api.patches[-1] == m.version_patch(cfg, v2, 0)
    assert champion(client) == "1"


def test_smoke_check_names_what_is_wrong():
    from components.deploy.rollout import SmokeFailed, smoke_check

    def answer(status=200, version="4", body=b'{"predictions": ["ok"]}', error=None):
        def post(url, payload, timeout):
            if error:
                raise error
            return status, {"X-Mixtune-Model-Version": version} if version else {}, body
        return post

    assert smoke_check(answer(), "http://svc", "4", 5) == "ok"
    for post, expected in [(answer(version="3"), "answered as version 3, not 4"),
                           (answer(version=None), "version unknown (no X-Mixtune-Model-Version header)"),
                           (answer(body=b'{"predictions": [""]}'), "without a non-empty string prediction"),
                           (answer(body=b"<html>"), "without a non-empty string prediction"),
                           (answer(status=503, body=b"queue full"), "answered HTTP 503: queue full"),
                           (answer(error=ConnectionRefusedError("refused")), "no answer from http://svc: refused")]:
        with pytest.raises(SmokeFailed, match=re.escape(expected)):
            smoke_check(post, "http://svc", "4", 5)
    with pytest.raises(SmokeFailed, match="names no URL"):
        smoke_check(answer(), "", "4", 5)
