from collections import Counter

from pipelines.sample_data import INTENTS, generate


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
