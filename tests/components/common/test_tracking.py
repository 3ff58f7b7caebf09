"""The pipeline's MLflow parent run on a cluster, where no driver process ends it: a failing step
marks it FAILED, the last step (register) marks it FINISHED."""
import pytest
from mlflow.tracking import MlflowClient

from components.common import tracking


def parent_status(cfg, pipeline_run: str) -> str:
    return MlflowClient().get_run(tracking.parent_run_id(cfg, pipeline_run)).info.status


def test_a_failing_step_marks_the_parent_failed_and_the_last_step_finishes_it(tiny_config):
    with tracking.step_run(tiny_config, "p1", "ingest"):
        pass
    assert parent_status(tiny_config, "p1") == "RUNNING"
    with pytest.raises(RuntimeError, match="disk full"):
        with tracking.step_run(tiny_config, "p1", "train"):
            raise RuntimeError("disk full")
    assert parent_status(tiny_config, "p1") == "FAILED"
    with tracking.step_run(tiny_config, "p1", "train") as run:  # the retry gets through
        pass
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
    tracking.finish_parent(tiny_config, "p1")
    assert parent_status(tiny_config, "p1") == "FINISHED"
    steps = MlflowClient().search_runs([tracking.setup(tiny_config)], "tags.`mixtune.role` = 'step'")
    assert sorted(r.data.tags["mixtune.step"] for r in steps) == ["ingest", "train", "train"]
