"""The register KFP component compiles into a valid one-step pipeline with its typed outputs."""
# No `from __future__ import annotations`: KFP reads the pipeline signature as real types.
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.pipeline_spec import pipeline_spec_pb2

from components.register.component import build


def test_register_component_compiles(tmp_path):
    op = build("registry.example/mixtune/cpu:test")

    @dsl.pipeline(name="register-only")
    def pipe(config_json: str, pipeline_run: str):
        op(config_json=config_json, pipeline_run=pipeline_run, model_uri="s3://b/r/train/model",
           eval_uri="s3://b/r/evaluate", train_run_id="abc123").set_caching_options(False)

    out = tmp_path / "register.yaml"
    compiler.Compiler().compile(pipe, str(out))
    doc = next(yaml.safe_load_all(out.read_text()))
    spec = json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec())
    comp = spec.components["comp-register"]
    params = {k: v.parameter_type for k, v in comp.output_definitions.parameters.items()}
    assert params["version"] == pipeline_spec_pb2.ParameterType.STRING
    assert params["promoted"] == pipeline_spec_pb2.ParameterType.BOOLEAN
    assert params["aliases"] == pipeline_spec_pb2.ParameterType.STRING
    assert comp.output_definitions.artifacts["metrics"].artifact_type.schema_title == "system.Metrics"
    assert set(comp.input_definitions.parameters) == {
        "config_json", "pipeline_run", "model_uri", "eval_uri", "train_run_id"}
    assert doc["deploymentSpec"]["executors"]["exec-register"]["container"]["image"].endswith("cpu:test")
