"""Does a reference summary belong to its dialogue? A check that needs no model and no reference.

A summary an agent wrote for a conversation reuses that conversation's words: its products, actions,
names and numbers. One attached to the wrong conversation (a broken export, a join on the wrong key, a
poisoned batch) shares almost none. Support = the share of the summary's content words (3+ letters, not
a stop word, not one of the words every support summary uses, like "customer" or "asked") found in the
dialogue, matched on their first five letters so "refunded" finds "refund".

Measured on ../shared (2026-12-02, a row judged by its best summary; tests/components/ingest/test_support.py
holds it on the real files): under 0.25 fall no TweetSumm row, 0.1% of SAMSum's and 0.6-0.7% of DialogSum's
(very abstractive references), against 84% of TweetSumm, 97% of SAMSum and 93-95% of DialogSum rows whose
summaries were moved to another conversation; under 0.1, 0-0.2% of honest rows.

Two rules use it (`data.summary_support`):
- a row whose best summary has under `quarantine_below` (0.1) is quarantined with the figure: it was
  written for another conversation;
- a source (or one of its objects) where more than `max_weak_fraction` (20%) of the judged rows have
  under `weak_below` (0.25) stops the ingest: a batch like that is a broken batch (a shuffled export, a join on the wrong key), not a
  few bad rows, and training on the rest would hide it.
"""
from __future__ import annotations

import re
from collections import Counter

from components.common.config import SummarySupportConfig

WORD = re.compile(r"[a-z0-9]+")
STEM = 5  # letters compared: "refunded" and "refund" match, "order" and "ordinary" do not
MIN_WORDS = 3  # a summary with fewer content words is too short to judge
REASON = "unsupported summary"
MIN_JUDGED = 20  # rows of a source before its unsupported fraction can stop the ingest

STOP = frozenset(
    "the and but for with from are was were been has have had its this that they them their she his her you "
    "your our not can will would could should does did than then there what which who when where how also any "
    "all some more very just into out about over after before again only own same such too get got being "
    "because while each other both few most these those here why whom him hers ours yours itself".split())
# Words of the summaries' own genre: in nearly every support summary, rarely in the dialogue.
GENRE = frozenset(
    "customer customers agent agents asked asks asking ask says said told tells informed informs inform "
    "complaining complains complained complaint wants wanted requested requests request issue issues problem "
    "help helped helps suggested suggests suggest states stated query queries regarding enquired enquires "
    "inquired inquires reply replied replies responds responded response person1 person2 person3".split())


def content_words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if len(w) >= 3 and w not in STOP and w not in GENRE]


def support(dialogue: str, summary: str) -> tuple[int, int]:
    """(content words of the summary found in the dialogue, content words of the summary)."""
    said = {w[:STEM] for w in content_words(dialogue)}
    words = content_words(summary)
    return sum(1 for w in words if w[:STEM] in said), len(words)


def best_support(fields: dict) -> tuple[float, str] | None:
    """(support, summary) of the record's best-supported summary; None when there is nothing to judge.

    The best one decides: abstractive references ("#Person2# advises a positive lifestyle") may miss their
    dialogue's words one at a time, but all of a row's references rarely do."""
    if "dialogue" not in fields:
        return None
    texts = list(dict.fromkeys(([fields["summary"]] if "summary" in fields else []) + list(fields.get("summaries") or [])))
    judged = [(f / t, text) for text in texts for f, t in [support(fields["dialogue"], text)] if t >= MIN_WORDS]
    return max(judged) if judged else None


def quarantine_reason(best: tuple[float, str] | None, cfg: SummarySupportConfig) -> str | None:
    if best is None or best[0] >= cfg.quarantine_below:
        return None
    return (f"{REASON}: its best summary has {best[0]:.0%} of its content words in the dialogue, under "
            f"data.summary_support.quarantine_below {cfg.quarantine_below:.0%}: {best[1][:80]!r}")


def weak_sources(units: list[dict], source_of: dict[str, str], cfg: SummarySupportConfig) -> list[str]:
    """One line per source, and per object of a source that passed, where more than max_weak_fraction of
    the judged rows have weak support. Objects too: a broken upload among many good files of one source
    (a source that accumulates every batch) would hide in the source's total."""
    if cfg.max_weak_fraction >= 1:
        return []
    judged, weak = Counter(), Counter()
    for u in units:
        if u["support"] is None:
            continue
        for key in (("source", source_of.get(u["file"], u["file"])), ("object", u["file"])):
            judged[key] += 1
            weak[key] += u["support"] < cfg.weak_below
    bad = [k for k in sorted(judged) if judged[k] >= MIN_JUDGED and weak[k] / judged[k] > cfg.max_weak_fraction]
    failed_sources = {name for kind, name in bad if kind == "source"}
    return [f"{kind} {name!r}: {weak[(kind, name)]} of {judged[(kind, name)]} summaries "
            f"({weak[(kind, name)] / judged[(kind, name)]:.0%}) have under {cfg.weak_below:.0%} of their content "
            f"words in their dialogue, over data.summary_support.max_weak_fraction {cfg.max_weak_fraction:.0%}: "
            f"they look attached to the wrong conversations (a shuffled export or a join on the wrong key)"
            for kind, name in bad if kind == "source" or source_of.get(name, name) not in failed_sources]
