"""A step that loses S3 part-way publishes nothing: its manifest is written last, so the next step
refuses the half-written prefix with a clear error, and rerunning the step completes it."""
from __future__ import annotations

import pytest

from components.common.storage import Store, join
from components.ingest.core import run_ingest
from components.shards.core import run_shards
from components.templates.core import run_templates
from components.train.core import check_shards, read_manifest
from pipelines.local import stage_sample
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.slow


def test_outage_mid_shards_publishes_nothing_and_the_rerun_completes(tiny_config, store, tmp_path, record):
    cfg = stage_sample(tiny_config, store, tmp_path)
    root = join(store.root, "runs", "partial")
    records = run_ingest(cfg, root, "partial").records_uri
    examples = run_templates(cfg, records, root, "partial").examples_uri
    with FaultProxy(int(cfg.storage.endpoint_url.rsplit(":", 1)[1])) as proxy:
        # Few attempts: the outage outlasts the retries and the step fails, as a long one would.
        storage = cfg.storage.model_copy(update={"endpoint_url": proxy.endpoint, "max_attempts": 2})
        proxied = cfg.model_copy(update={"storage": storage})
        proxy.down_on("/shards/train/")  # the first shard upload: the tokenizer is already there
        with pytest.raises(Exception) as failed:  # whatever botocore raised, through the pool
            run_shards(proxied, examples, root, "partial")
        proxy.down = False
        written = [uri.rsplit("/shards/", 1)[1] for uri, _ in Store(storage).list(join(root, "shards"))]
        with pytest.raises(FileNotFoundError) as refused:
            read_manifest(store, join(root, "shards"))
        rerun = run_shards(proxied, examples, root, "partial")
    check_shards(store, read_manifest(store, rerun.shards_uri))  # complete: every shard as listed
    ok = "manifest.json" not in written and "has not finished" in str(refused.value)
    record("S3 lost mid-shards (outlasts retries)", "no manifest; next step refuses; rerun completes",
           f"{type(failed.value).__name__}; {len(written)} objects, no manifest; rerun: "
           f"{rerun.manifest['splits']['train']['rows']} train rows", ok)
