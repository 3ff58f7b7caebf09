"""Every preset on its real files in ../shared/datasets (skipped, naming the path, when absent).

Row counts must reconcile with the sizes in ../shared/datasets/README.md and nearly every row must be
kept; run with -s to see kept/quarantined and the top reasons per preset.
"""
import time
from collections import Counter
from pathlib import Path

import pytest

from components.common.config import DataConfig, SourceConfig
from components.ingest.formats import parse_file

DATASETS = Path(__file__).resolve().parents[4] / "shared" / "datasets"  # ../shared/datasets

# preset -> ({file: rows per README}, least share kept, fields every record has)
CASES = {
    "dialogsum": ({"dialogsum/dialogsum.train.jsonl": 12460, "dialogsum/dialogsum.dev.jsonl": 500,
                   "dialogsum/dialogsum.test.jsonl": 500}, 0.99, {"dialogue", "summary", "topic"}),
    "samsum": ({"samsum/train.json": 14732, "samsum/val.json": 818, "samsum/test.json": 819}, 0.99,
               {"dialogue", "summary"}),
    "tweetsumm": ({"tweetsumm/tweetsumm_train.jsonl": 879, "tweetsumm/tweetsumm_valid.jsonl": 110,
                   "tweetsumm/tweetsumm_test.jsonl": 110}, 0.99, {"dialogue", "summary", "summaries"}),
    "ibm_customer_care": ({"ibm_customer_care/dev.json": 525, "ibm_customer_care/test.json": 500}, 0.99,
                          {"dialogue"}),
    "yelp": ({"yelp_reviews/yelp.csv": 10000}, 0.99, {"review", "rating"}),
    # Amazon Alexa has 79 reviews that are a single space: quarantined as empty.
    "amazon_alexa": ({"amazon_alexa/amazon_alexa.tsv": 3150}, 0.97, {"review", "rating"}),
    "wnut17": ({"wnut17/wnut17train.conll": 3394, "wnut17/emerging.dev.conll": 1009,
                "wnut17/emerging.test.annotated": 1287}, 0.99, {"sentence", "tokens", "tags", "entities"}),
    "codexglue_java_cs": ({"codexglue_java_cs/train.java-cs.txt.java": 10295,
                           "codexglue_java_cs/valid.java-cs.txt.java": 499,
                           "codexglue_java_cs/test.java-cs.txt.java": 1000}, 0.99, {"java", "cs"}),
}


@pytest.mark.parametrize("preset", list(CASES))
def test_preset_reads_the_real_files(preset):
    files, least_kept, must_have = CASES[preset]
    for rel in files:
        if not (DATASETS / rel).exists():
            pytest.skip(f"{DATASETS / rel} is absent (real data lives in ../shared/datasets)")
    limits = DataConfig()
    kept, quarantined, reasons, records = 0, 0, Counter(), []
    started = time.perf_counter()
    for rel, expected_rows in files.items():
        path = DATASETS / rel
        spec = SourceConfig(path=str(path), format=preset)
        result = parse_file(spec, str(path), path.read_bytes(), limits,
                            lambda other, folder=path.parent: (folder / other).read_bytes())
        assert sum(p.rows for p in result) == expected_rows, rel  # read = rows in the file
        for p in result:
            if p.error:
                quarantined += 1
                reasons[p.error.split(":")[0]] += 1
            else:
                kept += 1
                records.append(p)
    seconds = time.perf_counter() - started
    print(f"\n{preset}: kept {kept}, quarantined {quarantined} in {seconds:.2f}s; top reasons {reasons.most_common(3)}")
    assert kept >= least_kept * (kept + quarantined), reasons.most_common(5)
    assert all(must_have <= set(p.fields) for p in records), preset
    assert len({p.id for p in records}) == len(records), "ids are unique within a preset's files"
    _shape(preset, records)


def _shape(preset, records):
    first = records[0].fields
    if preset in ("dialogsum", "samsum", "tweetsumm", "ibm_customer_care"):
        assert all(": " in line for line in first["dialogue"].split("\n"))
    if preset == "dialogsum":
        assert first["dialogue"].startswith("#Person1#: ")
        test = [p for p in records if p.id.startswith("test_")]
        assert len(test) == 500 and all(len(p.fields["summaries"]) == 3 for p in test)
    if preset in ("tweetsumm", "ibm_customer_care"):
        speakers = {line.split(":")[0] for p in records for line in p.fields["dialogue"].split("\n")}
        assert speakers == {"Customer", "Agent"}
    if preset == "ibm_customer_care":
        assert all(p.fields["dialogue"].rsplit("\n", 1)[-1].startswith("Agent: ") for p in records)
    if preset in ("yelp", "amazon_alexa"):
        assert {p.fields["rating"] for p in records} == {"1", "2", "3", "4", "5"}
    if preset == "wnut17":
        assert sum(p.fields["entities"] != "none" for p in records) > 0.3 * len(records)
        assert any(e.startswith("creative-work: ") for p in records for e in p.fields["entities"].split("; "))
    if preset == "codexglue_java_cs":
        assert "{" in first["java"] and "{" in first["cs"]
