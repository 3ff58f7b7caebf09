"""How well ingest's summary-support check (components/ingest/support.py) tells honest reference summaries
from moved ones, on the real data in ../shared: per data set, the share of rows under `weak_below` and
under `quarantine_below`, honest and with every row's summaries moved to another conversation.

    .venv/bin/python benchmarks/summary_support.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.continual_batches import REPO, cut_batches, poison, read_tweetsumm  # noqa: E402
from components.common.config import SummarySupportConfig  # noqa: E402
from components.ingest.support import best_support  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"


def sets() -> dict[str, list[dict]]:
    """name -> rows {dialogue, summaries}."""
    honest, _ = cut_batches(read_tweetsumm(), 3, 200)
    out = {"tweetsumm": [{"dialogue": r["dialogue"], "summaries": r["summaries"]} for b in honest for r in b]}
    samsum = json.loads((DATASETS / "samsum" / "test.json").read_text())
    out["samsum test"] = [{"dialogue": r["dialogue"], "summaries": [r["summary"]]} for r in samsum]
    for split in ("dev", "test"):
        rows = [json.loads(x) for x in (DATASETS / "dialogsum" / f"dialogsum.{split}.jsonl").read_text().splitlines()]
        out[f"dialogsum {split}"] = [{"dialogue": r["dialogue"], "summaries": [
            r[k] for k in ("summary", "summary1", "summary2", "summary3") if r.get(k)]} for r in rows]
    return out


def shares(rows: list[dict], cfg: SummarySupportConfig) -> tuple[int, float, float]:
    bests = [b[0] for b in (best_support(r) for r in rows) if b is not None]
    return len(bests), sum(x < cfg.weak_below for x in bests) / len(bests), \
        sum(x < cfg.quarantine_below for x in bests) / len(bests)


def main() -> None:
    cfg = SummarySupportConfig()
    print(f"weak_below {cfg.weak_below}, quarantine_below {cfg.quarantine_below}, max_weak_fraction "
          f"{cfg.max_weak_fraction}")
    print(f"{'data set':16} {'judged':>7} {'honest weak':>12} {'honest quar.':>13} {'moved weak':>11} {'moved quar.':>12}")
    for name, rows in sets().items():
        n, weak, quar = shares(rows, cfg)
        _, mweak, mquar = shares(poison(rows, shift=7), cfg)
        print(f"{name:16} {n:7d} {weak:12.1%} {quar:13.1%} {mweak:11.1%} {mquar:12.1%}")


if __name__ == "__main__":
    main()
