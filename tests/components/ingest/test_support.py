"""Summary support: a row whose summaries belong to another conversation is quarantined, a batch of them
stops the ingest, and honest real data (TweetSumm, SAMSum, DialogSum) passes."""
import json
from pathlib import Path

import pytest

from benchmarks.continual_batches import cut_batches, poison, read_tweetsumm
from components.common.config import SourceConfig, SummarySupportConfig
from components.common.schemas import read_rows
from components.common.storage import join
from components.ingest.core import write_dataset
from components.ingest.support import best_support, content_words, quarantine_reason, support
from pipelines.sample_data import generate

DATASETS = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
CFG = SummarySupportConfig()


def test_support_counts_content_words_found_in_the_dialogue():
    dialogue = "Customer: I was charged twice for order 4417, please refund me\nAgent: Refunded, sorry!"
    assert content_words("The customer asked about a double charge.") == ["double", "charge"]
    assert support(dialogue, "Customer was charged twice for order 4417; agent refunded it.") == (5, 5)
    assert support(dialogue, "Customer cannot log in to the mobile app after the update.") == (0, 5)


def test_the_best_summary_decides_and_short_ones_are_not_judged():
    fields = {"dialogue": "A: the kettle lid cracked on arrival\nB: we will send a new kettle",
              "summaries": ["Someone dislikes winter holidays abroad.", "A new kettle replaces one whose lid cracked."]}
    assert best_support(fields)[1].startswith("A new kettle")
    assert quarantine_reason(best_support(fields), CFG) is None
    assert best_support({"dialogue": "A: hi\nB: hello", "summary": "Greetings."}) is None
    wrong = best_support({"dialogue": fields["dialogue"], "summary": "Someone dislikes winter holidays abroad."})
    reason = quarantine_reason(wrong, CFG)
    assert reason.startswith("unsupported summary: its best summary has 0% of its content words")
    assert "quarantine_below 10%" in reason


def test_weak_below_cannot_be_under_quarantine_below():
    with pytest.raises(ValueError, match="weak_below .* must be at least quarantine_below"):
        SummarySupportConfig(quarantine_below=0.3, weak_below=0.2)


def _weak_share(rows: list[tuple[str, list[str]]]) -> float:
    bests = [best_support({"dialogue": d, "summaries": s}) for d, s in rows]
    judged = [b[0] for b in bests if b is not None]
    return sum(x < CFG.weak_below for x in judged) / len(judged)


def test_real_support_summaries_pass_and_moved_ones_are_weak():
    if not (DATASETS / "tweetsumm").exists():
        pytest.skip("../shared/datasets is absent")
    honest, aside = cut_batches(read_tweetsumm(DATASETS / "tweetsumm"), 3, 200)
    rows = [(r["dialogue"], r["summaries"]) for b in honest for r in b]
    assert _weak_share(rows) <= 0.005
    assert _weak_share([(r["dialogue"], r["summaries"]) for r in poison(aside)]) > 4 * CFG.max_weak_fraction
    samsum = json.loads((DATASETS / "samsum" / "test.json").read_text())
    assert _weak_share([(r["dialogue"], [r["summary"]]) for r in samsum]) <= 0.005
    dialogsum = [json.loads(line) for line in (DATASETS / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()]
    refs = [(r["dialogue"], [r[k] for k in ("summary1", "summary2", "summary3")]) for r in dialogsum]
    assert _weak_share(refs) <= 0.01  # the most abstractive references here


def _put(store, key: str, rows: list[dict]) -> str:
    uri = join(store.root, "incoming", key)
    store.put_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return uri


def _cfg(cfg, *sources):
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": list(sources)})})


def test_a_moved_summary_is_quarantined_with_its_raw_row_redacted(tiny_config, store):
    chats = generate(40, seed=5)
    chats[3] = {**chats[3], "summary": "Jane Roe (jane.roe@example.org) wants her gym membership cancelled."}
    uri = _put(store, "one/chats.jsonl", chats)
    result = write_dataset(_cfg(tiny_config, SourceConfig(path=uri, name="team")), join(store.root, "runs", "a"), store)
    assert result.counts["rows_quarantined"] == 1 and result.counts["rows_kept"] == 39
    assert result.quarantine_reasons == {"unsupported summary": 1}
    [q] = read_rows(store, join(result.report_uri, "quarantine.parquet"))
    assert q["line"] == 4 and "jane.roe@example.org" not in q["raw"] and "<EMAIL>" in q["raw"]


def test_a_batch_of_moved_summaries_stops_the_ingest_and_names_the_source(tiny_config, store):
    chats = generate(60, seed=6)
    moved = [{**c, "summary": chats[(i + 1) % len(chats)]["summary"]} for i, c in enumerate(chats)]
    good = _put(store, "two/good.jsonl", generate(60, seed=8))
    bad = _put(store, "two/moved.jsonl", moved)
    cfg = _cfg(tiny_config, SourceConfig(path=good, name="old"), SourceConfig(path=bad, name="new_batch"))
    with pytest.raises(ValueError, match=r"refusing this batch: source 'new_batch': \d+ of 60 summaries") as e:
        write_dataset(cfg, join(store.root, "runs", "b"), store)
    assert "'old'" not in str(e.value) and "quarantine.parquet" in str(e.value)
    assert read_rows(store, join(store.root, "runs", "b", "ingest", "quarantine.parquet"))  # the rows can be read
    # One broken upload among good files of the same source is named by its object.
    _put(store, "three/good.jsonl", generate(300, seed=9))
    _put(store, "three/moved.jsonl", moved)  # about 15% of the source: under 20%
    mixed = _cfg(tiny_config, SourceConfig(path=join(store.root, "incoming", "three"), name="chats"))
    with pytest.raises(ValueError, match=r"refusing this batch: object '[^']*moved.jsonl': \d+ of 60") as e:
        write_dataset(mixed, join(store.root, "runs", "m"), store)
    assert "source 'chats'" not in str(e.value) and "good.jsonl" not in str(e.value)
    off = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "summary_support": SummarySupportConfig(max_weak_fraction=1.0)})})
    assert write_dataset(off, join(store.root, "runs", "c"), store).counts["rows_kept"] > 0
