from collections import Counter

from components.common.config import SourceConfig, load_config
from components.ingest.formats import parse_file
from pipelines.sample_data import INTENTS, broken_rows, generate, write_jsonl


def test_deterministic_and_varied():
    a, b = generate(200, seed=3), generate(200, seed=3)
    assert a == b
    assert generate(200, seed=4) != a
    intents = Counter(r["intent"] for r in a)
    assert set(intents) == set(INTENTS) and min(intents.values()) >= 10
    assert len({r["summary"] for r in a}) == len(a)  # facts vary, so no two summaries are equal


def test_summary_facts_are_in_the_chat():
    for row in generate(100, seed=1):
        chat = " ".join(m["content"] for m in row["messages"])
        assert row["customer"] in chat, "the customer's name must be readable in the chat"
        assert row["messages"] and {m["role"] for m in row["messages"]} == {"customer", "agent"}


def test_broken_rows_are_all_quarantined_by_ingest(tmp_path):
    path = write_jsonl(generate(50), tmp_path / "c.jsonl", broken=broken_rows(8))
    cfg = load_config(None)
    units = parse_file(SourceConfig(path=str(path)), str(path), path.read_bytes(), cfg.data, lambda name: b"")
    assert sum(u.rows for u in units) == 58
    assert sum(u.rows for u in units if u.error is None) == 50
    reasons = Counter(u.error.split(":")[0] for u in units if u.error)
    assert reasons == {"invalid JSON": 2, "empty field": 2, "too few turns": 2, "unknown speaker": 2}
