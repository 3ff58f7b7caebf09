"""Ingest on the real DialogSum files in ../shared (skipped with the reason when they are absent)."""
from pathlib import Path

import pytest

from components.common.config import SourceConfig
from components.common.schemas import read_rows
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
    assert c["read"] == 1000 and c["read"] == c["kept"] + c["quarantined"] + c["duplicates"]
    assert c["kept"] >= 990, result.quarantine_reasons
    rows = read_rows(store, join(root, "ingest", "train.parquet"))
    assert rows[0]["dialogue"].startswith("#Person") and rows[0]["target"]
    # The test file's first reference (summary1) is the target; ids keep DialogSum's fname.
    ids = {r["id"] for split in ("train", "validation", "test")
           for r in read_rows(store, join(root, "ingest", f"{split}.parquet"))}
    assert "dialogsum:test_0" in ids and "dialogsum:dev_0" in ids
