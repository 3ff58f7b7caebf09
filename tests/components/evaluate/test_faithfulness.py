"""Per-example faithfulness checks: unsupported-fact counts, name coverage, degenerate outputs (and honest
outputs that are not), and the rows the bootstrap sums."""
from __future__ import annotations

import numpy as np
import pytest

from components.common.config import parse_config
from components.evaluate import faithfulness as fa

DIALOGUE = ("Customer: Hi, this is Hugo Novak. My order 483920 has not arrived.\n"
            "Agent: Hello Hugo, I'm Sam. Sorry! The courier lost it; a new one arrives in 3 days.\n"
            "Customer: Thanks. I also paid 58,95 euros for express shipping on 5 September.\n"
            "Agent: I've refunded the 58.95 euros.")
REFERENCE = "Hugo Novak's order 483920 was lost. Sam sends a new one within 3 days and refunds 58.95 euros."


@pytest.fixture
def cfg():
    return parse_config({}).evaluate.faithfulness


def test_unsupported_facts_counts_distinct_facts():
    facts, bad = fa.unsupported_facts(REFERENCE, DIALOGUE)
    assert bad == [] and {f.kind for f in facts} == {"name", "id", "number", "amount"}
    summary = "Hugo's order 483920 was lost. Sam refunds 59,95 euros on September 6th. Order 483920 again."
    facts, bad = fa.unsupported_facts(summary, DIALOGUE)
    assert [f.text for f in bad] == ["59,95", "September 6th"]
    assert sum(f.text == "483920" for f in facts) == 1  # a repeated id is one fact


def test_name_coverage_counts_reference_people_the_candidate_names():
    refs = [REFERENCE]
    assert fa.name_coverage("Novak's parcel was lost; Sam refunds him.", refs, DIALOGUE) == (2, 2)
    assert fa.name_coverage("The parcel was lost; the agent refunds it.", refs, DIALOGUE) == (2, 0)
    assert fa.name_coverage("Hugo's parcel was lost.", refs, DIALOGUE) == (2, 1)
    assert fa.name_coverage("Anything.", ["The parcel was lost."], DIALOGUE) == (0, 0)
    # the best-covered reference counts; an invented name in a reference is not required
    assert fa.name_coverage("Sam helps.", ["Sam helps.", REFERENCE], DIALOGUE) == (1, 1)
    assert fa.name_coverage("Sam helps.", ["Sam helps Gerry."], DIALOGUE) == (1, 1)


@pytest.mark.parametrize("output, reason", [
    ("", "empty"), ("   \n", "empty"),
    ("refund refund refund refund refund", "loop"),
    ("the order the order the order the order the order is late", "loop"),
    ("Hugo Novak 2222222222222222", "loop"),
    (DIALOGUE, "prompt copy"),
    ("Refund.", "too short"),
    (" ".join([REFERENCE] * 4), "too long"),
])
def test_degenerate_reasons(cfg, output, reason):
    assert fa.degenerate_reason(output, DIALOGUE, [REFERENCE], cfg) == reason


@pytest.mark.parametrize("output", [
    REFERENCE,
    "Hugo's order 483920 was lost, so the order is resent. Sam refunds 100.00 euros.",  # "order" twice, 100.00
    "Sam refunds Hugo Novak: the order was lost and a new order arrives in 3 days.",
    "Hugo Novak says order 483920 has not arrived. Sam sends a new one in 3 days.",  # copies a few phrases
])
def test_honest_outputs_are_not_degenerate(cfg, output):
    assert fa.degenerate_reason(output, DIALOGUE, [REFERENCE], cfg) is None


def test_length_range_uses_the_shortest_and_longest_reference(cfg):
    refs = ["Sam refunds Hugo the money today.", REFERENCE]  # 6 words: under 1.5 is too short
    assert fa.degenerate_reason("Sam refunds Hugo.", DIALOGUE, refs, cfg) is None
    assert fa.degenerate_reason("Refund.", DIALOGUE, refs, cfg) == "too short"
    assert fa.degenerate_reason(" ".join([REFERENCE] * 3), DIALOGUE, refs, cfg) is None


def test_check_and_example_stats_rows(cfg):
    good = fa.check(REFERENCE, DIALOGUE, [REFERENCE], cfg)
    bad = fa.check("Gerry Novak's order 483921 was lost.", DIALOGUE, [REFERENCE], cfg)
    empty = fa.check("", DIALOGUE, [REFERENCE], cfg)
    assert good.unsupported == [] and good.degenerate is None and good.covered == good.ref_names == 2
    assert sorted(f.text for f in bad.unsupported) == ["483921", "Gerry Novak's"]
    assert empty.degenerate == "empty" and empty.facts == []
    stats = fa.example_stats([good, bad, empty])
    assert stats.shape == (3, len(fa.STAT_COLUMNS))
    np.testing.assert_array_equal(stats[2], [0, 0, 2, 0, 1])
    assert stats[1][fa.STAT_COLUMNS.index("unsupported")] == 2
    assert fa.example_stats([]).shape == (0, len(fa.STAT_COLUMNS))
