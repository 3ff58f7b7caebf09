"""The evaluate KFP component compiles into a valid one-step pipeline with its typed outputs."""
# No `from __future__ import annotations`: KFP reads the pipeline signature as real types.
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.pipeline_spec import pipeline_spec_pb2

from components.evaluate.component import build


def test_evaluate_component_compiles(tmp_path):
    op = build("registry.example/mixtune/cpu:test")

    @dsl.pipeline(name="evaluate-only")
    def pipe(config_json: str, pipeline_run: str, artifact_root: str):
        op(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root,
           examples_uri="s3://b/r/templates", model_uri="s3://b/r/train/model", base_model_uri="s3://b/r/train/base")

    out = tmp_path / "evaluate.yaml"
    compiler.Compiler().compile(pipe, str(out))
    doc = next(yaml.safe_load_all(out.read_text()))
    spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    comp = spec.components["comp-evaluate"]
    params = {k: v.parameter_type for k, v in comp.output_definitions.parameters.items()}
    assert params["eval_uri"] == pipeline_spec_pb2.ParameterType.STRING
    assert params["candidate_primary"] == pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
    assert params["base_primary"] == pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
    assert params["gate_promote"] == pipeline_spec_pb2.ParameterType.BOOLEAN
    assert comp.output_definitions.artifacts["metrics"].artifact_type.schema_title == "system.Metrics"
    assert comp.output_definitions.artifacts["report"].artifact_type.schema_title == "system.HTML"
    assert set(comp.input_definitions.parameters) == {
        "config_json", "pipeline_run", "artifact_root", "examples_uri", "model_uri", "base_model_uri"}
    executor = doc["deploymentSpec"]["executors"]["exec-evaluate"]["container"]
    assert executor["image"] == "registry.example/mixtune/cpu:test"
    assert "pip install" not in " ".join(executor["command"])  # the image already has mixtune
