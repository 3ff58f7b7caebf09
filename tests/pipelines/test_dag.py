import json

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.common.config import load_config
from pipelines.dag import compile_pipeline

STEPS = ["ingest", "templates", "shards", "train", "evaluate", "register"]


def _compile(tmp_path, **overrides):
    cfg = load_config(None, overrides)
    path = compile_pipeline(cfg, str(tmp_path / "p.yaml"))
    docs = list(yaml.safe_load_all(open(path)))
    return cfg, docs


def test_compiled_yaml_parses_strictly_into_pipeline_spec(tmp_path):
    _, docs = _compile(tmp_path)
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = spec.root.dag.tasks
    assert sorted(tasks) == sorted(STEPS)
    # The DAG edges are the data flow of the six steps.
    deps = {name: sorted(t.dependent_tasks) for name, t in tasks.items()}
    assert deps["templates"] == ["ingest"] and deps["shards"] == ["templates"]
    assert deps["train"] == ["shards"] and deps["evaluate"] == ["templates", "train"]
    assert deps["register"] == ["evaluate", "train"]
    assert set(spec.root.input_definitions.parameters) == {"config_json", "pipeline_run", "artifact_root"}


def test_images_come_from_the_config(tmp_path):
    _, docs = _compile(tmp_path, **{"images.cpu": "reg.example/mixtune/cpu:1.2", "images.gpu": "reg.example/mixtune/gpu:1.2"})
    executors = docs[0]["deploymentSpec"]["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items()}
    assert images["exec-train"] == "reg.example/mixtune/gpu:1.2"
    assert {v for k, v in images.items() if k != "exec-train"} == {"reg.example/mixtune/cpu:1.2"}


def test_no_credentials_in_compiled_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-that-must-not-leak")
    _, docs = _compile(tmp_path)
    assert "s3cr3t-value-that-must-not-leak" not in (tmp_path / "p.yaml").read_text()


def test_shards_fan_out_over_partitions(tmp_path):
    _, docs = _compile(tmp_path, **{"shards.partitions": 3})
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = spec.root.dag.tasks
    loop = next(name for name in tasks if name.startswith("for-loop"))
    assert sorted(tasks) == sorted(["ingest", "templates", "shards-prepare", loop, "shards-merge", "train",
                                    "evaluate", "register"])
    assert sorted(tasks[loop].dependent_tasks) == ["shards-prepare"]
    assert sorted(tasks["shards-merge"].dependent_tasks) == [loop]
    assert sorted(tasks["train"].dependent_tasks) == ["shards-merge"]
    # One task per partition, indices known when the pipeline compiles.
    items = json_format.MessageToDict(tasks[loop].parameter_iterator.items)
    assert json.loads(items["raw"]) == ["0", "1", "2"]
    body = spec.components[tasks[loop].component_ref.name].dag.tasks
    assert list(body) == ["shards-partition"] and not body["shards-partition"].caching_options.enable_cache


def test_scheduled_variant_names_each_run_by_kfps_run_id(tmp_path):
    cfg = load_config(None, {"shards.partitions": 2})
    docs = list(yaml.safe_load_all(open(compile_pipeline(cfg, str(tmp_path / "s.yaml"), scheduled=True))))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    assert set(spec.root.input_definitions.parameters) == {"config_json"}
    text = (tmp_path / "s.yaml").read_text()
    # Every step, the partitions inside the loop too, gets the run id as its pipeline_run.
    assert text.count("'{{$.pipeline_job_uuid}}'") + text.count('"{{$.pipeline_job_uuid}}"') >= 8


def test_cluster_secrets_reach_every_step_by_name_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-that-must-not-leak")
    _, docs = _compile(tmp_path, **{"cluster.s3_secret": "mixtune-s3", "cluster.mlflow_secret": "mlflow-auth"})
    assert "s3cr3t-value-that-must-not-leak" not in (tmp_path / "p.yaml").read_text()
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STEPS)
    for config in executors.values():
        refs = {s["secretName"]: (s["optional"], [k["envVar"] for k in s["keyToEnv"]]) for s in config["secretAsEnv"]}
        assert refs == {"mixtune-s3": (False, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
                        "mlflow-auth": (True, ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"])}


def test_without_secrets_pods_rely_on_their_role(tmp_path):
    _, docs = _compile(tmp_path)
    assert len(docs) == 1, "no Kubernetes platform section: nothing names a Secret"


def test_deploy_runs_only_when_the_champion_moved_and_only_when_enabled(tmp_path):
    _, docs = _compile(tmp_path, **{"serve.kubernetes.enabled": True, "cluster.s3_secret": "mixtune-s3"})
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = spec.root.dag.tasks
    [group] = [name for name in tasks if name not in STEPS]
    assert sorted(tasks[group].dependent_tasks) == ["register"]
    assert tasks[group].trigger_policy.condition == \
        "inputs.parameter_values['pipelinechannel--register-promoted'] == true"
    promoted = tasks[group].inputs.parameters["pipelinechannel--register-promoted"].task_output_parameter
    assert (promoted.producer_task, promoted.output_parameter_key) == ("register", "promoted")
    body = spec.components[tasks[group].component_ref.name].dag.tasks
    assert list(body) == ["deploy"] and not body["deploy"].caching_options.enable_cache
    version = body["deploy"].inputs.parameters["version"].component_input_parameter
    assert tasks[group].inputs.parameters[version].task_output_parameter.output_parameter_key == "version"
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "exec-deploy" in executors  # the Secret reaches the deploy step too, by name
    assert docs[0]["deploymentSpec"]["executors"]["exec-deploy"]["container"]["image"] == "mixtune/cpu:latest"

    _, docs = _compile(tmp_path)  # disabled (the default): no deploy step, no condition
    assert sorted(docs[0]["root"]["dag"]["tasks"]) == sorted(STEPS)
    assert "exec-deploy" not in docs[0]["deploymentSpec"]["executors"]
