"""The evaluation set: which examples every model is scored on, and how it is versioned.

By default it is this run's test split (per task, the first `max_examples` in the order of a hash of
their id). With `evaluate.eval_set_uri` it is a frozen Parquet a team keeps fixed across runs, so a
retrain on new chat logs is scored on exactly the set the champion was. Either way evaluate writes the
set it used to <eval>/eval_set.parquet and records its content hash: equal hashes, equal sets.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq

from components.common.schemas import read_rows
from components.common.storage import Store, join

REQUIRED = ("id", "task", "inputs", "targets")


def references(row: dict) -> list[str]:
    """Every reference of an example: its `references` (eval splits), else its one target."""
    refs = row.get("references")
    return list(refs) if refs else [row["targets"]]


def read_eval_source(store: Store, examples_uri: str, eval_set_uri: str | None) -> tuple[list[dict], str]:
    """(rows, where) of the frozen set if one is configured, else of this run's test split."""
    if not eval_set_uri:
        where = join(examples_uri, "test.parquet")
        return read_rows(store, where), where
    try:
        if eval_set_uri.startswith("s3://"):
            rows = read_rows(store, eval_set_uri)
        else:
            rows = pq.read_table(io.BytesIO(Path(eval_set_uri).read_bytes())).to_pylist()
    except FileNotFoundError:
        raise FileNotFoundError(f"evaluate.eval_set_uri: {eval_set_uri} not found") from None
    missing = [c for c in REQUIRED if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{eval_set_uri}: an evaluation set needs columns {list(REQUIRED)}; missing {missing}")
    return rows, eval_set_uri


def id_order(row: dict) -> str:
    return hashlib.sha256(row["id"].encode()).hexdigest()


def select_examples(rows: list[dict], max_examples: int, tasks: list[str] | None = None,
                    per_source: bool = False) -> list[dict]:
    """Per task, the first max_examples rows in the order of a hash of their id: the same set for every
    model and run, and a fair sample when several sources feed one task (by id itself, the
    alphabetically first source would fill the quota). Grouped by task in the order of `tasks`.
    per_source: the quota holds for each source of a task, so a small source (the old chat logs beside
    the new ones) gets as many examples as the gate needs to hold it to a tolerance."""
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"evaluation set has duplicate example ids (e.g. {dup!r})")
    names = tasks if tasks is not None else sorted({r["task"] for r in rows})
    chosen = []
    for task in names:
        mine = sorted((r for r in rows if r["task"] == task), key=id_order)
        if not per_source:
            chosen += mine[:max_examples]
            continue
        taken: dict[str, int] = {}
        for r in mine:
            src = source_of(r["id"])
            if taken.get(src, 0) < max_examples:
                taken[src] = taken.get(src, 0) + 1
                chosen.append(r)
    found = {r["task"] for r in chosen}
    missing = [t for t in names if t not in found]
    if not chosen:
        raise ValueError(f"evaluation set has no examples of tasks {names}: nothing to evaluate")
    if missing:
        raise ValueError(f"evaluation set has no examples of tasks {missing} (evaluate.tasks); it has "
                         f"{sorted({r['task'] for r in rows})}")
    return chosen


def with_gated_set(rows: list[dict], tasks: list[str], gated: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows, tasks) extended by the set the champion was gated on: its examples whose id this run's split
    lacks, and its tasks after the configured ones. A retrain on new chat logs alone is then still scored on
    every task and source the champion was held to, so forgetting shows in the gate's per-task checks."""
    have = {r["id"] for r in rows}
    extra = [r for r in gated if r["id"] not in have]
    more_tasks = sorted({r["task"] for r in gated} - set(tasks))
    return rows + extra, list(tasks) + more_tasks


def eval_set_sha256(rows: list[dict]) -> str:
    """Content hash of the set of (id, task, inputs, references): the order rows are scored in is not part
    of what a set is, so a set re-read from eval_set.parquet, or selected in another order, hashes equal."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r["id"]):
        h.update(json.dumps([r["id"], r["task"], r["inputs"], references(r)], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def source_of(example_id: str) -> str:
    """'tweetsumm:abc#0' -> 'tweetsumm': ingest writes record ids as <source name>:<id in the source>."""
    return example_id.split(":", 1)[0]


def by_source(rows: list[dict], idx: list[int]) -> dict[str, list[int]]:
    """source -> positions within idx (0..len(idx)-1) of its rows, sources sorted by name."""
    out: dict[str, list[int]] = {}
    for k, i in enumerate(idx):
        out.setdefault(source_of(rows[i]["id"]), []).append(k)
    return dict(sorted(out.items()))


def by_task(rows: list[dict]) -> dict[str, list[int]]:
    """task -> positions of its rows, in evaluation order."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(r["task"], []).append(i)
    return out
