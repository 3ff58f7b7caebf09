"""The deploy KFP component compiles with its typed interface; the CLI reports a failed deploy in one line."""
# No `from __future__ import annotations`: KFP reads the pipeline signature as real types.
import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.pipeline_spec import pipeline_spec_pb2

from components.deploy import __main__ as cli
from components.deploy.component import build
from components.deploy.rollout import DeployError


def test_deploy_component_compiles(tmp_path):
    op = build("registry.example/mixtune/cpu:test")

    @dsl.pipeline(name="deploy-only")
    def pipe(config_json: str, pipeline_run: str):
        op(config_json=config_json, pipeline_run=pipeline_run, version="7").set_caching_options(False)

    out = tmp_path / "deploy.yaml"
    compiler.Compiler().compile(pipe, str(out))
    doc = next(yaml.safe_load_all(out.read_text()))
    spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    comp = spec.components["comp-deploy"]
    assert set(comp.input_definitions.parameters) == {"config_json", "pipeline_run", "version"}
    assert set(comp.output_definitions.parameters) == {"url", "revision"}
    assert comp.output_definitions.artifacts["metrics"].artifact_type.schema_title == "system.Metrics"
    assert doc["deploymentSpec"]["executors"]["exec-deploy"]["container"]["image"].endswith("cpu:test")


def test_cli_picks_the_step_or_a_redeploy_and_fails_in_one_line(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "deploy_champion",
                        lambda cfg, version, run: calls.append(("step", version, run)) or _fail())
    monkeypatch.setattr(cli, "redeploy", lambda cfg, version: calls.append(("redeploy", version)) or _fail())
    for argv in (["--version", "7", "--pipeline-run", "r7"], ["--version", "6"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 1
    assert calls == [("step", "7", "r7"), ("redeploy", "6")]
    assert capsys.readouterr().err.splitlines() == ["python -m components.deploy: v7 did not come up"] * 2


def _fail():
    raise DeployError("v7 did not come up")
