"""ROUGE against values computed by hand, and the helpers around generation."""
from __future__ import annotations

import pytest

from components.common.generation import length_sorted_batches
from components.evaluate.rouge import rouge, rouge_per_example, split_sentences


def test_rouge_matches_hand_computed_values():
    # pred "the cat on the mat" (5 tokens) vs ref "the cat sat on the mat" (6 tokens):
    # unigrams: 5 shared -> P=1, R=5/6, F=10/11.  bigrams: 3 of 4 vs 3 of 5 -> F=2/3.
    # LCS "the cat on the mat" = 5 -> F=10/11; one sentence, so Lsum = L.
    got = rouge(["the cat on the mat"], [["the cat sat on the mat"]])
    assert got["rouge1"] == pytest.approx(100 * 10 / 11)
    assert got["rouge2"] == pytest.approx(100 * 2 / 3)
    assert got["rougeL"] == pytest.approx(100 * 10 / 11)
    assert got["rougeLsum"] == pytest.approx(100 * 10 / 11)


def test_rouge_lsum_scores_sentences_separately():
    # Swapped sentences: the LCS over the whole text is 2 of 4 tokens (F=0.5), but each reference
    # sentence is fully matched by some predicted sentence, so the summary-level LCS gives F=1.
    got = rouge(["Cd ef. Ab gh."], [["Ab gh. Cd ef."]])
    assert got["rouge1"] == pytest.approx(100.0)
    assert got["rougeL"] == pytest.approx(50.0)
    assert got["rougeLsum"] == pytest.approx(100.0)


def test_rouge_uses_stemming_and_averages_examples():
    got = rouge(["refunds the orders", "nothing alike"], [["refund the order"], ["completely different words"]])
    assert got["rouge1"] == pytest.approx(50.0)  # (100 + 0) / 2
    assert got["rouge2"] == pytest.approx(50.0)


def test_empty_prediction_scores_zero():
    assert rouge([""], [["a reference"]]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}


def test_multi_reference_rouge_takes_the_best_reference_per_example():
    # Example 0: pred "the cat sat" (3 tokens); refs "a dog ran" (0 shared) and "the cat sat down" (4).
    #   ref 1 is best: unigrams 3 shared -> P=3/3, R=3/4, F=6/7; bigrams {the cat, cat sat} both in
    #   ref 1's 3 -> P=1, R=2/3, F=4/5; LCS "the cat sat"=3 -> F=6/7.
    # Example 1: pred "a dog barked" (3, "barked" stems to "bark"); refs "a dog" and "the dog barked loudly".
    #   ref 0: unigrams a, dog shared -> P=2/3, R=2/2, F=4/5; bigram "a dog" -> P=1/2, R=1/1, F=2/3; LCS 2 -> F=4/5.
    #   ref 1: unigrams dog, bark -> P=2/3, R=2/4, F=4/7; bigram "dog bark" -> P=1/2, R=1/3, F=2/5; LCS 2 -> 4/7.
    #   so ref 0 is best for every type.
    preds = ["the cat sat", "a dog barked"]
    refs = [["a dog ran", "the cat sat down"], ["a dog", "the dog barked loudly"]]
    rows = rouge_per_example(preds, refs)
    assert rows[0]["rouge1"] == pytest.approx(6 / 7)
    assert rows[0]["rouge2"] == pytest.approx(4 / 5)
    assert rows[0]["rougeL"] == pytest.approx(6 / 7)
    assert rows[1]["rouge1"] == pytest.approx(4 / 5)
    assert rows[1]["rouge2"] == pytest.approx(2 / 3)
    assert rows[1]["rougeL"] == pytest.approx(4 / 5)
    got = rouge(preds, refs)
    assert got["rouge1"] == pytest.approx(100 * (6 / 7 + 4 / 5) / 2)
    assert got["rouge2"] == pytest.approx(100 * (4 / 5 + 2 / 3) / 2)
    assert got["rougeLsum"] == pytest.approx(got["rougeL"])
    # Scoring only the first reference would give ex 0 nothing: the multi-reference mean is higher.
    assert rouge(preds, [[r[0]] for r in refs])["rouge1"] == pytest.approx(100 * (0 + 4 / 5) / 2)


def test_each_rouge_type_picks_its_own_best_reference():
    # pred "cat dog bird" vs A "bird dog cat": unigrams 3/3 -> F=1, no shared bigram -> 0, LCS 1 -> F=1/3;
    # vs B "cat dog fish": unigrams 2/3 -> F=2/3, bigram "cat dog" 1/2 each -> F=1/2, LCS 2 -> F=2/3.
    (row,) = rouge_per_example(["cat dog bird"], [["bird dog cat", "cat dog fish"]])
    assert row["rouge1"] == pytest.approx(1.0)      # from A
    assert row["rouge2"] == pytest.approx(1 / 2)    # from B
    assert row["rougeL"] == pytest.approx(2 / 3)    # from B


def test_rouge_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        rouge([], [])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        rouge(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="example 1 has no references"):
        rouge(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="example 0: references must be a list"):
        rouge(["a"], ["a"])  # the old single-reference shape is refused, not scored per character


def test_split_sentences_keeps_amounts_whole():
    text = "Anna paid 12.99 euros. Sam refunds it! Done?\nNext line"
    assert split_sentences(text).split("\n") == ["Anna paid 12.99 euros.", "Sam refunds it!", "Done?", "Next line"]


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert sorted(i for b in batches for i in b) == list(range(5))
