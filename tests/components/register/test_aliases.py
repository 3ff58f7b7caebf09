"""`mixtune promote` and `mixtune rollback` on a real SQLite MLflow store and real S3."""
from __future__ import annotations

import json

import pytest
import yaml

from components.register.aliases import AliasError, promote, rollback
from components.register.core import run_register
from pipelines.cli import main
from tests.components.common.gate_metrics import gate_metrics, task_scores
from tests.components.register.conftest import NAME, aliases


def forgetting_run(store, run: str, champion_version: str):
    """Better on summarization, but review_rating fell 4 points against the champion."""
    from components.common.storage import join

    model_uri = join(store.root, "runs", run, "model")
    store.put_json(join(model_uri, "config.json"), {"model_type": "t5"})
    store.put_bytes(join(model_uri, "_COMPLETE"), b"")
    eval_uri = join(store.root, "runs", run, "evaluate")
    tasks = {"summarization": task_scores(40.0, 1.0, 25.0),
             "review_rating": task_scores(50.0, 20.0, 54.0, primary="accuracy")}
    store.put_json(join(eval_uri, "metrics.json"), gate_metrics(tasks, champion_version, model_uri=model_uri))
    return model_uri, eval_uri


def test_rollback_walks_back_and_promote_reapplies_the_gate(tiny_config, client, make_run, store):
    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")
    run_register(tiny_config, *make_run("r2", candidate=25.0, champion=20.0, champion_version="1"), "t2", "r2")
    kept = run_register(tiny_config, *forgetting_run(store, "r3", "2"), "t3", "r3")
    assert not kept.promoted and "review_rating holds vs champion failed" in kept.reason
    assert aliases(client) == {"champion": "2", "challenger": "3"}

    change = rollback(tiny_config, reason="bad answers in production")
    assert (change.before, change.after) == ("2", "1") and aliases(client)["champion"] == "1"
    assert client.get_model_version(NAME, "2").tags["mixtune.rolled_back"] == "bad answers in production"
    audit = json.loads(client.get_registered_model(NAME).tags["mixtune.last_alias_change"])
    assert audit["action"] == "rollback" and (audit["from"], audit["to"]) == ("2", "1")
    with pytest.raises(AliasError, match="v1 was the first champion"):
        rollback(tiny_config)

    # v2 was evaluated against v1, which is champion again: the gate holds, it may come back.
    change = promote(tiny_config, "2")
    assert (change.before, change.after, change.forced) == ("1", "2", False) and "promote:" in change.reason
    assert client.get_model_version(NAME, "2").tags["mixtune.replaced_champion"] == "1"
    with pytest.raises(AliasError, match="already champion"):
        promote(tiny_config, "2")

    # The forgetting candidate is refused by the gate, and stays refused until forced with a reason.
    with pytest.raises(AliasError, match="gate refuses .* v3: keep: review_rating holds vs champion failed"):
        promote(tiny_config, "3")
    assert aliases(client)["champion"] == "2"
    with pytest.raises(AliasError, match="--force needs --reason"):
        promote(tiny_config, "3", force=True)
    change = promote(tiny_config, "3", force=True, reason="rating task retired")
    assert change.forced and aliases(client)["champion"] == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert tags["mixtune.forced_promotion"] == "rating task retired" and tags["mixtune.replaced_champion"] == "2"
    assert rollback(tiny_config).after == "2"

    with pytest.raises(AliasError, match="has no version 99"):
        promote(tiny_config, "99")


def test_promote_waits_for_the_evaluation_against_todays_champion(tiny_config, client, make_run):
    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")
    run_register(tiny_config, *make_run("r2", candidate=19.0, champion=20.0, champion_version="1"), "t2", "r2")
    run_register(tiny_config, *make_run("r3", candidate=30.0, champion=20.0, champion_version="1"), "t3", "r3")
    assert aliases(client)["champion"] == "3"
    # v2 was scored against v1; v3 is champion now: its numbers say nothing about v3.
    with pytest.raises(AliasError, match=r"champion changed since evaluation \(v1 then, v3 now\)"):
        promote(tiny_config, "2")


def test_cli_promote_and_rollback_exit_codes(tiny_config, client, make_run, tmp_path, capsys):
    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")
    run_register(tiny_config, *make_run("r2", candidate=25.0, champion=20.0, champion_version="1"), "t2", "r2")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    common = ["--config", str(path), "--external-s3", "--workdir", str(tmp_path / "w")]
    assert main(["rollback", *common, "--reason", "incident 42"]) == 0
    assert "champion v2 → v1" in capsys.readouterr().out
    assert main(["rollback", *common]) == 1
    assert "first champion" in capsys.readouterr().err
    assert main(["promote", *common, "--version", "2"]) == 0
    assert aliases(client)["champion"] == "2"


def test_cli_rollback_redeploys_the_inferenceservice_when_deploys_are_on(tiny_config, client, make_run, tmp_path,
                                                                         capsys, monkeypatch):
    """The wiring only: the redeploy itself is tested against a fake Kubernetes API in tests/components/deploy."""
    from components.deploy import core as deploy_core
    from components.deploy.rollout import DeployError, DeployResult

    run_register(tiny_config, *make_run("r1", candidate=20.0), "t1", "r1")
    run_register(tiny_config, *make_run("r2", candidate=25.0, champion=20.0, champion_version="1"), "t2", "r2")
    calls = []

    def redeploy(cfg, version, io=None):
        calls.append(version)
        if version == "2":
            raise DeployError("InferenceService mixtune/mixtune-summarizer did not come up within 900 s")
        return DeployResult(cfg.registry.model_name, version, "s3://m/v1", url="http://isvc.example")

    monkeypatch.setattr(deploy_core, "redeploy", redeploy)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    common = ["--config", str(path), "--external-s3", "--workdir", str(tmp_path / "w"),
              "--set", "serve.kubernetes.enabled=true"]
    assert main(["rollback", *common]) == 0
    assert calls == ["1"] and "InferenceService mixtune/mixtune-summarizer serves v1" in capsys.readouterr().out
    assert main(["promote", *common, "--version", "2"]) == 1  # the alias moved, serving did not follow
    err = capsys.readouterr().err
    assert calls == ["1", "2"] and "does not serve v2" in err and "did not come up" in err
    assert main(["rollback", *common[:-2]]) == 0 and calls == ["1", "2"]  # deploys off: the registry only
