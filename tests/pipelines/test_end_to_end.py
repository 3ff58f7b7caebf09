"""The whole DAG through kfp.local against a real SeaweedFS and a real SQLite MLflow."""
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.common.config import parse_config
from components.common.storage import Store
from pipelines.dag import compile_pipeline
from pipelines.embedded import LocalS3
from pipelines.local import patched_environ, run_local
from tests.conftest import LENIENT_GATE
from tests.faults import secret_scan
from tests.pipelines.test_ui import check_ui

STEP_DIRS = ["ingest", "templates", "shards", "train", "evaluate"]
DIALOGUES = ["Customer: Hi, I was charged twice for order 4417 this morning.\nAgent: Sorry! I refunded the second charge.",
             "Customer: My parcel has not arrived.\nAgent: It left the warehouse today and arrives Friday."]


def serve_and_load(cfg, cwd, version: str) -> dict:
    """After a local run, as a user would: `mixtune serve` and `mlflow.pyfunc.load_model` via `mixtune exec`."""
    import subprocess
    import sys

    import requests
    import yaml

    from pipelines.embedded import free_ports
    from tests.pipelines.test_serve_cli import BIN, Started

    (cwd / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    common = ["--config", "cfg.yaml", "--workdir", "state"]
    port = free_ports(1)[0]
    with Started([str(BIN / "mixtune"), "serve", *common, "--port", str(port)], f"http://127.0.0.1:{port}", cwd) as s:
        answer = requests.post(f"{s.url}/invocations", json={"inputs": DIALOGUES}, timeout=120)
        assert answer.status_code == 200 and answer.headers["X-Mixtune-Model-Version"] == version
        info = requests.get(f"{s.url}/version", timeout=5).json()
        assert (info["version"], info["alias"]) == (version, "champion"), info
    script = ("import json, mlflow; m = mlflow.pyfunc.load_model('models:/mixtune-summarizer@champion'); "
              f"print(json.dumps(list(m.predict({DIALOGUES!r}))))")
    done = subprocess.run([str(BIN / "mixtune"), "exec", *common, "--", sys.executable, "-c", script], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"served": answer.json()["predictions"], "pyfunc": json.loads(done.stdout.strip().splitlines()[-1])}


@pytest.mark.slow
def test_two_runs_end_to_end(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    credentials = {}  # every S3 key pair the embedded server is started with (a new pair per start)
    real_start = LocalS3.start

    def start_and_remember(server, *args, **kwargs):
        n = len(credentials) // 2
        credentials[f"S3 access key #{n}"], credentials[f"S3 secret key #{n}"] = (
            server.access_key, server.secret_key)
        return real_start(server, *args, **kwargs)

    monkeypatch.setattr(LocalS3, "start", start_and_remember)
    cfg = parse_config({
        "data": {"sample": {"conversations": 400}},
        # One task and 120 steps: inverse templates (write the chat from its summary) would take a
        # quarter of a budget this small; multi-task configs keep every kind (the default).
        "templates": {"kinds": ["zero_shot", "few_shot"]},
        "model": {"tiny": {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4, "num_layers": 2,
                           "num_decoder_layers": 2, "vocab_size": 1000},
                  "max_source_length": 256, "max_target_length": 64},
        "train": {"num_processes": 2, "max_steps": 120, "micro_batch_size": 16, "learning_rate": 3e-3},
        "evaluate": {"max_examples": 24, "batch_size": 12}, "generation": {"max_new_tokens": 48},
        "registry": {"gate": LENIENT_GATE},
        "tracking": {"uri": "sqlite:///state/mlflow.db"},
    })
    first = run_local(cfg, tmp_path / "state", verbose=False)
    quiet = capfd.readouterr()  # the console of a quiet run: a line per step, not kfp.local's output
    shown = [ln for ln in quiet.out.splitlines() if ln.strip()]
    assert [ln.split()[:2] for ln in shown if ln.startswith(("✓", "✗"))] == [
        ["✓", s] for s in STEP_DIRS[:3] + ["train", "evaluate", "register"]], quiet.out
    assert len(shown) < 30 and "Executing task" not in quiet.out and "executor_input" not in quiet.out, quiet.out
    m = first["metrics"]["summarization"]
    assert m["candidate"]["rougeL"] > m["base"]["rougeL"] + 5, m  # fine-tuning learned something
    assert first["registered"]["aliases"] and "champion" in first["registered"]["aliases"]
    assert first["evaluation"]["gate"]["promote"] and first["registered"]["decision"].startswith("promote:")
    assert first["rows"][0][1] == first["rows"][0][2] + first["rows"][0][3] + first["rows"][0][4]
    # The report is a local file that outlives the embedded S3 server, with metrics and predictions beside it.
    report = Path(first["report"])
    assert report == tmp_path / "state" / "reports" / first["pipeline_run"] / "report.html"
    assert report.read_text().lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in report.read_text()
    assert json.loads((report.parent / "metrics.json").read_text())["tasks"] == first["evaluation"]["tasks"]
    assert (report.parent / "predictions.parquet").stat().st_size > 0

    # Every step's artifacts are objects in S3 (the server's data outlives it).
    with LocalS3(tmp_path / "state" / "s3") as s3:
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="mixtune", MaxKeys=1000)["Contents"]]
    root = first["artifact_root"].split("s3://mixtune/")[1]
    for step in STEP_DIRS:
        assert any(k.startswith(f"{root}/{step}/") for k in keys), step
    assert f"{root}/train/model/model.safetensors" in keys and f"{root}/train/model/_COMPLETE" in keys

    # MLflow: one parent run, one nested run per step, all finished.
    client = MlflowClient(first["tracking_uri"])
    exp = client.get_experiment_by_name("mixtune")
    runs = client.search_runs([exp.experiment_id], f"tags.`mixtune.pipeline_run` = '{first['pipeline_run']}'")
    parent = [r for r in runs if r.data.tags.get("mixtune.role") == "pipeline"]
    steps = [r for r in runs if r.data.tags.get("mixtune.role") == "step"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(r.data.tags["mixtune.step"] for r in steps) == sorted(STEP_DIRS + ["register"])
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in steps)
    # It reads like a training project: typed experiment, step runs that sort in pipeline order with their
    # own source, and the headline params and metrics on the parent run, so pipeline runs compare.
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sorted(r.info.run_name for r in steps) == ["1-ingest", "2-templates", "3-shards", "4-train",
                                                       "5-evaluate", "6-register"]
    assert {r.data.tags["mlflow.source.name"] for r in steps} == {f"components.{s}" for s in STEP_DIRS + ["register"]}
    top = parent[0].data
    assert top.params["base_model"] == "tiny" and top.params["max_steps"] == "120"
    assert top.params["dataset_version"] == first["dataset_version"] and top.params["learning_rate"] == "0.003"
    assert top.metrics["candidate_rougeL"] == pytest.approx(m["candidate"]["rougeL"]) and top.metrics["promoted"] == 1.0
    assert top.metrics["rows_kept"] == first["rows"][0][2] and top.metrics["train_tokens_per_second"] > 0
    assert all(top.metrics[f"seconds_{n}"] > 0 for n in ("1-ingest", "4-train", "5-evaluate"))
    version = client.get_model_version("mixtune-summarizer", first["registered"]["version"])
    assert version.description.startswith("**champion**: promoted.") and "| gate check | passed |" in version.description
    # Each step's whole output is in the state folder; the console got one line per step.
    logs_dir = tmp_path / "state" / "logs" / first["pipeline_run"]
    assert sorted(p.name for p in logs_dir.iterdir()) == ["01-ingest.log", "02-templates.log", "03-shards.log",
                                                          "04-train.log", "05-evaluate.log", "06-register.log",
                                                          "pipeline.log"]
    assert "MIXTUNE_PROGRESS" in (logs_dir / "04-train.log").read_text()

    # Production consumes the champion: `mixtune serve` on the state folder answers with it, and MLflow's
    # own loader (through `mixtune exec`, which starts the state's S3 server) predicts the same summaries.
    served = serve_and_load(cfg, tmp_path, first["registered"]["version"])
    assert served["served"] == served["pyfunc"] and all(served["served"]), served

    # A person opens what the run produced: `mixtune ui` and a real browser (tests/pipelines/test_ui.py).
    evaluate_run = next(r.info.run_id for r in steps if r.data.tags["mixtune.step"] == "evaluate")
    check_ui(["--config", "cfg.yaml", "--workdir", "state"], tmp_path, exp.experiment_id, evaluate_run,
             "mixtune-summarizer", report)

    # The same inputs again: the trained model is reused (content-keyed, components/common/reuse.py)
    # and the registry gets nothing new.
    again = run_local(cfg, tmp_path / "state")
    train_runs = client.search_runs([exp.experiment_id], f"tags.`mixtune.pipeline_run` = '{again['pipeline_run']}' "
                                    "and tags.`mixtune.step` = 'train'")
    assert train_runs[0].data.tags["mixtune.reused"] == "true"
    assert train_runs[0].data.tags["mixtune.reused_from_run"] == first["pipeline_run"]
    assert again["registered"]["version"] == first["registered"]["version"] and not again["registered"]["new"]
    assert again["registered"]["decision"].startswith("nothing new")
    assert len(client.search_model_versions("name = 'mixtune-summarizer'")) == 1
    assert "champion" in again["registered"]["aliases"]

    # Retrain the champion from the registry, replaying what it was trained on (found through its lineage):
    # a new model, scored against that champion on the set it was gated on.
    replay = {"from": "champion", "ratio": 0.5}
    cfg = parse_config({**cfg.model_dump(by_alias=True), "train": {**cfg.train.model_dump(), "max_steps": 40},
                        "model": {**cfg.model.model_dump(), "base": "models:/mixtune-summarizer@champion"},
                        "templates": {**cfg.templates.model_dump(by_alias=True),
                                      "mixture": {**cfg.templates.mixture.model_dump(by_alias=True), "replay": replay}}})
    second = run_local(cfg, tmp_path / "state")
    v1 = first["registered"]["version"]
    assert second["champion_version_evaluated"] == v1
    v2 = client.get_model_version("mixtune-summarizer", second["registered"]["version"])
    v1_tags = client.get_model_version("mixtune-summarizer", v1).tags
    assert v2.tags["mixtune.replay_from_version"] == v1 and v2.tags["mixtune.replay_uri"] == v1_tags["mixtune.templates_uri"]
    assert v2.tags["mixtune.templates_uri"] == second["artifact_root"] + "/templates"
    # The base it was trained from is v1 (pinned by shards, tagged on train): base and champion score alike.
    scores = second["metrics"]["summarization"]
    assert scores["base"]["rougeL"] == scores["champion"]["rougeL"] == m["candidate"]["rougeL"], scores
    train_run = client.search_runs([exp.experiment_id], f"tags.`mixtune.pipeline_run` = '{second['pipeline_run']}' "
                                   "and tags.`mixtune.step` = 'train'")[0]
    assert train_run.data.tags["mixtune.base_model_version"] == v1
    # Promoted only if the gate said so, and the registry agrees with the report.
    assert ("champion" in second["registered"]["aliases"]) == second["evaluation"]["gate"]["promote"]
    assert second["registered"]["version"] != first["registered"]["version"] and second["registered"]["new"]
    assert "challenger" in second["registered"]["aliases"]
    json.dumps(second, default=str)  # the summary is JSON-serialisable

    # No credential anywhere the runs left something: logs, the work folder (kfp.local outputs, the
    # MLflow database), every object in the bucket, MLflow runs and registry, the compiled pipeline.
    logs = capfd.readouterr()
    compiled = compile_pipeline(cfg, str(tmp_path / "mixtune.yaml"))
    with LocalS3(tmp_path / "state" / "s3") as s3, patched_environ({**s3.env(), "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}):
        # MLflow reads its S3 artifacts with these keys; patched_environ also drops boto3's default
        # session on the way out, which would otherwise keep them for every later test.
        found = (secret_scan.scan_text(quiet.out + quiet.err + logs.out + logs.err, credentials, "test output")
                 + secret_scan.scan_file(compiled, credentials)
                 + [f for d in (tmp_path / "state").iterdir() if d.name != "s3" for f in secret_scan.scan_tree(d, credentials)]
                 + secret_scan.scan_store(Store(cfg.storage.model_copy(update={"endpoint_url": s3.endpoint})),
                                          f"s3://{cfg.storage.bucket}", credentials)
                 + secret_scan.scan_mlflow(second["tracking_uri"], credentials))
    assert len(credentials) >= 6 and not found, "\n".join(map(str, found))
