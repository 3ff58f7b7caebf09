"""ROUGE against values computed by hand, and the helpers around generation."""
from __future__ import annotations

import pytest

from components.evaluate.generation import length_sorted_batches
from components.evaluate.rouge import rouge, split_sentences


def test_rouge_matches_hand_computed_values():
    # pred "the cat on the mat" (5 tokens) vs ref "the cat sat on the mat" (6 tokens):
    # unigrams: 5 shared -> P=1, R=5/6, F=10/11.  bigrams: 3 of 4 vs 3 of 5 -> F=2/3.
    # LCS "the cat on the mat" = 5 -> F=10/11; one sentence, so Lsum = L.
    got = rouge(["the cat on the mat"], ["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(100 * 10 / 11)
    assert got["rouge2"] == pytest.approx(100 * 2 / 3)
    assert got["rougeL"] == pytest.approx(100 * 10 / 11)
    assert got["rougeLsum"] == pytest.approx(100 * 10 / 11)


def test_rouge_lsum_scores_sentences_separately():
    # Swapped sentences: the LCS over the whole text is 2 of 4 tokens (F=0.5), but each reference
    # sentence is fully matched by some predicted sentence, so the summary-level LCS gives F=1.
    got = rouge(["Cd ef. Ab gh."], ["Ab gh. Cd ef."])
    assert got["rouge1"] == pytest.approx(100.0)
    assert got["rougeL"] == pytest.approx(50.0)
    assert got["rougeLsum"] == pytest.approx(100.0)


def test_rouge_uses_stemming_and_averages_examples():
    got = rouge(["refunds the orders", "nothing alike"], ["refund the order", "completely different words"])
    assert got["rouge1"] == pytest.approx(50.0)  # (100 + 0) / 2
    assert got["rouge2"] == pytest.approx(50.0)


def test_empty_prediction_scores_zero():
    assert rouge([""], ["a reference"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}


def test_rouge_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        rouge([], [])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        rouge(["a", "b"], ["a"])


def test_split_sentences_keeps_amounts_whole():
    text = "Anna paid 12.99 euros. Sam refunds it! Done?\nNext line"
    assert split_sentences(text).split("\n") == ["Anna paid 12.99 euros.", "Sam refunds it!", "Done?", "Next line"]


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert sorted(i for b in batches for i in b) == list(range(5))
