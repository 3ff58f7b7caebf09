"""The scheduled variant's naming, run for real through kfp.local: a task handed KFP's run-id
placeholder and no artifact_root writes under <bucket>/<prefix>/runs/<that run id>/, as a recurring
run's steps do on the cluster (KFP v2 cannot vary a recurring run's parameters per run)."""
import json
import re

import kfp.local
from kfp import dsl

from components.common.config import SourceConfig
from components.common.storage import join
from components.ingest import component as ingest_c


def test_a_task_named_by_the_run_id_writes_under_runs_of_that_id(tiny_config, store, tmp_path):
    chats = [json.dumps({"conversation_id": f"c{i}", "summary": "Late parcel.", "messages": [
        {"role": "user", "content": f"order {i} is late"}, {"role": "assistant", "content": "I will check it."}]})
        for i in range(8)]
    uri = join(store.root, "incoming", "chats.jsonl")
    store.put_bytes(uri, ("\n".join(chats) + "\n").encode())
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"sources": [SourceConfig(path=uri, name="team")]})})
    ingest_op = ingest_c.build("python:3.11")

    @dsl.pipeline(name="scheduled-naming")
    def scheduled(config_json: str) -> str:
        return ingest_op(config_json=config_json, pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         artifact_root="").outputs["records_uri"]

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    scheduled(config_json=cfg.model_dump_json())
    runs = join(store.root, "runs")
    folders = {uri[len(runs) + 1:].split("/")[0] for uri, _ in store.list(runs)}
    assert len(folders) == 1, folders
    [run_id] = folders
    # KFP's run id, resolved (a UUID on a cluster, a short id in kfp.local), never the placeholder text.
    assert re.fullmatch(r"[0-9A-Za-z-]{6,64}", run_id), run_id
    # The step's MLflow runs carry the same name, so the parent run and the artifacts agree.
    from mlflow.tracking import MlflowClient

    from components.common import tracking

    exp = tracking.setup(cfg)
    [parent] = MlflowClient().search_runs([exp], f"tags.`{tracking.PIPELINE_TAG}` = '{run_id}' "
                                                 f"and tags.`{tracking.ROLE_TAG}` = 'pipeline'")
    assert parent.info.run_name == run_id
