"""The arrival batches of benchmarks/continual.py, from real data in ../shared (nothing is copied into the repo):
generated support chats for the first round, TweetSumm's customer-support conversations cut into three
honest batches and one poisoned batch (summaries shuffled between conversations), Alexa reviews (and, with
--public-summaries, DialogSum dialogues) as the public task data every round reads.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWEETSUMM = REPO.parent / "shared" / "datasets" / "tweetsumm"
ALEXA = REPO.parent / "shared" / "datasets" / "amazon_alexa" / "amazon_alexa.tsv"
DIALOGSUM = REPO.parent / "shared" / "datasets" / "dialogsum" / "dialogsum.train.jsonl"


def id_order(line: dict) -> str:
    return hashlib.sha256(str(line["id"]).encode()).hexdigest()


def read_tweetsumm(folder: Path = TWEETSUMM) -> list[dict]:
    """Every TweetSumm conversation (train, valid and test files alike: the pipeline splits them itself)."""
    rows = []
    for path in sorted(folder.glob("tweetsumm_*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise FileNotFoundError(f"{folder}: no tweetsumm_*.jsonl (see ../shared/datasets/README.md)")
    return rows


def cut_batches(rows: list[dict], batches: int, poisoned: int) -> tuple[list[list[dict]], list[dict]]:
    """(honest batches, the poisoned batch's honest rows): conversations in the order of a hash of their id,
    the first `poisoned` set aside, the rest cut into `batches` equal parts. No conversation is in two."""
    ordered = sorted(rows, key=id_order)
    if len(ordered) < poisoned + batches:
        raise ValueError(f"{len(ordered)} conversations cannot make {batches} batches and {poisoned} poisoned")
    aside, rest = ordered[:poisoned], ordered[poisoned:]
    size = len(rest) // batches
    return [rest[k * size:(k + 1) * size] for k in range(batches)], aside


def poison(rows: list[dict], shift: int = 1) -> list[dict]:
    """The same conversations, each with the summaries of another one: fluent, on topic for the domain, and
    wrong for the chat they are attached to. Every conversation's summaries move (shift < len)."""
    if len(rows) < 2:
        raise ValueError("poisoning needs at least two conversations")
    k = shift % len(rows) or 1
    return [{**r, "summaries": rows[(i + k) % len(rows)]["summaries"]} for i, r in enumerate(rows)]


def write_lines(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def reviews_subset(source: Path, n: int, out: Path) -> Path:
    """The first n reviews of the TSV in the order of a hash of their line (header kept): a public task that
    takes a smaller share of a small model's budget than the support chats it is trained beside."""
    header, *lines = source.read_text(encoding="utf-8-sig").splitlines()
    kept = hash_first(lines, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([header] + kept) + "\n", encoding="utf-8")
    return out


def lines_subset(source: Path, n: int, out: Path) -> Path:
    """The first n lines of a JSON-lines file in the order of a hash of each line: public summarization data
    (DialogSum) a small model learns to summarize dialogue in general from, beside the chats."""
    kept = hash_first([line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()], n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return out


def hash_first(lines: list[str], n: int) -> list[str]:
    """The first n lines in the order of a hash of each: a fixed sample that does not follow the file's order."""
    return sorted(lines, key=lambda line: hashlib.sha256(line.encode()).hexdigest())[:n]
