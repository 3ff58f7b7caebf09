"""Small hand-made records for the templates tests (no third-party data)."""
from __future__ import annotations

import pytest

TOPICS = ["shopping", "job interview", "travel", "health", "weather", "birthday party", "restaurant",
          "school", "moving house", "sports"]


def fields_for(task: str, i: int) -> dict:
    """Fields of record i that feed `task` (and only it), with text unique to the record."""
    if task == "summarization":
        return {"dialogue": f"Customer: my order {i} is late\nAgent: I will check order {i}",
                "summary": f"Order {i} is late and the agent checks it."}
    if task == "dialogue_topic":
        return {"dialogue": f"#Person1#: shall we talk {i}?\n#Person2#: sure, about {TOPICS[i % 10]}",
                "summary": f"They talk {i}.", "topic": TOPICS[i % 10]}
    if task == "review_rating":
        return {"review": f"Visit number {i} was {'great' if i % 2 else 'bad'}.", "rating": str(i % 5 + 1)}
    if task == "ner":
        return {"sentence": f"Bob {i} flew to Paris", "tokens": ["Bob", str(i), "flew", "to", "Paris"],
                "tags": ["B-person", "O", "O", "O", "B-location"], "entities": "person: Bob; location: Paris"}
    if task == "code_translation":
        return {"java": f"public int f{i}(int x) {{ return x + {i}; }}",
                "cs": f"public int F{i}(int x) {{ return x + {i}; }}"}
    raise KeyError(task)


def make_records(task: str, n: int, split: str = "train", start: int = 0, source: str = "src") -> list[dict]:
    return [{"id": f"{source}:{task}-{i}", "source": source, "split": split, "fields": fields_for(task, i)}
            for i in range(start, start + n)]


@pytest.fixture
def records():
    return make_records
