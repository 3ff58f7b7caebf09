"""Ingest on the real DialogSum files in ../shared (skipped with the reason when they are absent)."""
from pathlib import Path

import pytest

from components.common.config import SourceConfig
from components.common.schemas import read_records
from components.common.storage import join
from components.ingest.core import run_ingest
DIALOGSUM = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "dialogsum"  # ../shared


@pytest.fixture
def dialogsum_dir():
    if not (DIALOGSUM / "dialogsum.dev.jsonl").exists():
        pytest.skip(f"{DIALOGSUM} is absent (real DialogSum lives in ../shared/datasets)")
    return DIALOGSUM


def test_dialogsum_dev_and_test_ingest_completely(tiny_config, store, dialogsum_dir):
    sources = [SourceConfig(path=str(dialogsum_dir / f"dialogsum.{s}.jsonl"), format="dialogsum", name="dialogsum")
               for s in ("dev", "test")]
    cfg = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"sources": sources})})
    root = join(store.root, "runs", "ds")
    result = run_ingest(cfg, root, "ds")
    c = result.counts
    assert c["rows_read"] == 1000 and c["rows_read"] == c["rows_kept"] + c["rows_quarantined"] + c["rows_duplicate"]
    assert c["rows_kept"] >= 990, result.quarantine_reasons
    rows = {r["id"]: r for split in ("train", "validation", "test")
            for r in read_records(store, join(result.records_uri, f"{split}.parquet"))}
    assert "dialogsum:test_0" in rows and "dialogsum:dev_0" in rows  # ids keep DialogSum's fname
    dev, test = rows["dialogsum:dev_0"]["fields"], rows["dialogsum:test_0"]["fields"]
    assert dev["dialogue"].startswith("#Person") and dev["summary"] and dev["topic"]
    # The test file's three references are all kept; the first is the summary.
    assert len(test["summaries"]) == 3 and test["summary"] == test["summaries"][0]
