"""Metric families against hand-computed values and sacrebleu, and the bootstrap around them."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from components.evaluate import metrics as m

# --- families ------------------------------------------------------------------------------------


def test_task_families_and_overrides():
    assert m.family_of("summarization") == "rouge"
    assert m.family_of("review_rating") == "rating"
    assert m.family_of("ner") == "ner"
    assert m.family_of("code_translation") == "code"
    assert m.family_of("some_new_task") == "rouge"
    assert m.family_of("some_new_task", {"some_new_task": "rating"}) == "rating"
    with pytest.raises(ValueError, match="unknown metric family"):
        m.family_of("ner", {"ner": "f2"})
    assert m.primary_metric("rouge") == "rougeL" and m.primary_metric("code") == "bleu"
    assert m.metric_names("rating") == ("accuracy", "mae", "parsed")
    assert m.lower_is_better("rating") == ["mae"] and m.lower_is_better("ner") == []


def test_rouge_family_uses_multi_reference_rouge():
    # Same case as test_rouge: best-reference F of rouge1 = 6/7 and 4/5.
    preds = ["the cat sat", "a dog barked"]
    refs = [["a dog ran", "the cat sat down"], ["a dog", "the dog barked loudly"]]
    stats = m.example_stats("rouge", preds, refs)
    assert stats.shape == (2, 4)
    assert m.score("rouge", preds, refs)["rouge1"] == pytest.approx(100 * (6 / 7 + 4 / 5) / 2)
    np.testing.assert_allclose(m.example_scores("rouge", stats), [100 * 6 / 7, 100 * 4 / 5])


# --- rating ----------------------------------------------------------------------------------------


def test_rating_accuracy_mae_and_unparsable():
    preds = ["4", "3 stars", "great!", "5", "10/10, 2 stars"]
    refs = [["4"], ["5"], ["2"], ["1"], ["2"]]
    # correct: 1 0 0 0 1 -> 40 %; errors 0, 2, 4 (unparsable = max), 4, 0 -> MAE 10/5 = 2; parsed 4/5.
    stats = m.example_stats("rating", preds, refs)
    assert m.aggregate("rating", stats) == pytest.approx({"accuracy": 40.0, "mae": 2.0, "parsed": 80.0})
    np.testing.assert_allclose(m.example_scores("rating", stats), [100, 50, 0, 0, 100])
    with pytest.raises(ValueError, match="example 0: no reference is a rating"):
        m.example_stats("rating", ["4"], [["great"]])


# --- ner -------------------------------------------------------------------------------------------

NER_GOLD = ["person: Bob; location: Paris", "person: Ann; location: Rome", "none", "person: Sam; person: Sam",
            "none", "person: Bob", "creative-work: The Dark Knight"]
NER_PRED = ["person: Bob; person: Paris",  # wrong type: tp 1, pred 2, gold 2
            "person: Ann",                 # missing entity: tp 1, pred 1, gold 2
            "group: Acme",                 # hallucinated: tp 0, pred 1, gold 0
            "person: Sam",                 # a repeated gold mention found once: tp 1, pred 1, gold 2
            "none",                        # none vs none: 0, 0, 0 (perfect)
            "Bob went home",               # junk: one 'unknown' mention: tp 0, pred 1, gold 1
            "creative-work: The Dark Knight"]  # multi-token span: tp 1, pred 1, gold 1


def test_ner_counts_entities_by_type_and_text():
    stats = m.example_stats("ner", NER_PRED, [[g] for g in NER_GOLD])
    np.testing.assert_array_equal(stats, [[1, 2, 2], [1, 1, 2], [0, 1, 0], [1, 1, 2], [0, 0, 0], [0, 1, 1], [1, 1, 1]])
    # tp 4, predicted 7, gold 8: P = 4/7, R = 4/8, F1 = 2*4/(7+8) = 8/15.
    got = m.aggregate("ner", stats)
    assert got == pytest.approx({"precision": 100 * 4 / 7, "recall": 50.0, "f1": 100 * 8 / 15})
    # Per example F1 = 2tp/(pred+gold): 2/4, 2/3, 0, 2/3, empty/empty = 1, 0, 1.
    np.testing.assert_allclose(m.example_scores("ner", stats), [50, 200 / 3, 0, 200 / 3, 100, 0, 100])


def test_ner_repeats_and_multiple_references():
    # A mention predicted twice but given once: the second copy is a false positive.
    assert m.ner_counts("product: iPhone; product: iPhone", "product: iPhone") == (1, 2, 1)
    assert m.ner_counts("person Bob;; none", "person: Bob") == (0, 1, 1)  # no ': ': type 'unknown'
    assert m.parse_entities("person Bob") == [("unknown", "person Bob")]
    assert m.ner_counts(" Person :  Bob ;", "person: Bob") == (1, 1, 1)  # case of type, whitespace
    # With two references the one giving the best F1 counts.
    stats = m.example_stats("ner", ["person: Bob"], [["location: Bob", "person: Bob; person: Ann"]])
    np.testing.assert_array_equal(stats, [[1, 1, 2]])


def test_ner_without_any_entities_is_perfect_not_nan():
    stats = m.example_stats("ner", ["none", "none"], [["none"], ["none"]])
    assert m.aggregate("ner", stats) == {"precision": 100.0, "recall": 100.0, "f1": 100.0}
    # Predicting nothing when something was due is 0, never NaN.
    assert m.score("ner", ["none"], [["person: Bob"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


# --- code ------------------------------------------------------------------------------------------

CODE_PRED = ["public int x ;", "return a + b ;", "foo ( ) ;", "if ( x ) { y ( ) ; }", "int   y =  2 ;"]
CODE_REFS = [["public int x ;", "int x ;"], ["return b + a ;"], ["bar ( ) ;", "foo ( ) ;", "foo() ;"],
             ["if ( x ) y ( ) ;", "if ( x ) { z ( ) ; }"], ["int y = 2 ;"]]


def test_corpus_bleu_from_summed_stats_equals_sacrebleu():
    stats = m.example_stats("code", CODE_PRED, CODE_REFS)
    assert stats.shape == (5, 11)
    # sacrebleu takes reference streams; None pads examples with fewer references.
    streams = [[refs[j] if j < len(refs) else None for refs in CODE_REFS] for j in range(3)]
    expected = sacrebleu.corpus_bleu(CODE_PRED, streams).score
    got = m.aggregate("code", stats)
    assert got["bleu"] == pytest.approx(expected, abs=1e-9)
    assert 0 < got["bleu"] < 100
    # Exact match after whitespace normalisation: examples 0, 2 and 4 -> 3/5.
    assert got["exact_match"] == pytest.approx(60.0)
    sentence = [sacrebleu.sentence_bleu(p, r).score for p, r in zip(CODE_PRED, CODE_REFS)]
    np.testing.assert_allclose(m.example_scores("code", stats), sentence)


# --- bootstrap -------------------------------------------------------------------------------------


def _rating_stats(n: int, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    correct = (rng.random(n) < accuracy).astype(float)
    err = np.where(correct == 1, 0.0, rng.integers(1, 5, n))
    return np.column_stack([correct, err, np.ones(n)])


def test_bootstrap_ci_contains_point_is_seeded_and_narrows():
    small, large = _rating_stats(30, 0.6, seed=1), _rating_stats(600, 0.6, seed=1)
    point = m.aggregate("rating", small)["accuracy"]
    low, high = m.bootstrap_ci("rating", small, "accuracy", resamples=500, seed=7)
    assert low <= point <= high and low < high
    assert m.bootstrap_ci("rating", small, "accuracy", resamples=500, seed=7) == (low, high)
    # Accuracy on 30 examples moves in steps of 3.3, so another seed is seen on the finer MAE.
    assert m.bootstrap_ci("rating", small, "mae", seed=8) != m.bootstrap_ci("rating", small, "mae", seed=7)
    low2, high2 = m.bootstrap_ci("rating", large, "accuracy", resamples=500, seed=7)
    assert high2 - low2 < (high - low) / 2  # ~ 1/sqrt(20) as wide
    narrow = m.bootstrap_ci("rating", small, "accuracy", resamples=500, confidence=0.5, seed=7)
    assert low <= narrow[0] <= narrow[1] <= high


def test_bootstrap_of_corpus_metrics():
    stats = m.example_stats("code", CODE_PRED * 4, CODE_REFS * 4)
    point = m.aggregate("code", stats)
    for metric in ("bleu", "exact_match"):
        low, high = m.bootstrap_ci("code", stats, metric, resamples=200)
        assert low <= point[metric] <= high
    ner = m.example_stats("ner", NER_PRED * 3, [[g] for g in NER_GOLD] * 3)
    low, high = m.bootstrap_ci("ner", ner, "f1", resamples=300)
    assert low <= m.aggregate("ner", ner)["f1"] <= high
    with pytest.raises(ValueError, match="not a ner metric"):
        m.bootstrap_ci("ner", ner, "bleu")


def test_paired_delta():
    a = _rating_stats(200, 0.5, seed=2)
    same = m.paired_delta("rating", a, a.copy(), "accuracy", resamples=300, seed=0)
    assert same == {"mean": 0.0, "low": 0.0, "high": 0.0}
    # b is a with 40 wrong answers fixed: clearly better, and the pairing sees it.
    b = a.copy()
    wrong = np.flatnonzero(b[:, 0] == 0)[:40]
    b[wrong] = [1.0, 0.0, 1.0]
    d = m.paired_delta("rating", b, a, "accuracy", resamples=300, seed=0)
    assert d["mean"] == pytest.approx(20.0)  # 40 of 200 examples
    assert 0 < d["low"] <= d["mean"] <= d["high"]
    # MAE drops, so b - a is negative; the sign is left to the caller.
    mae = m.paired_delta("rating", b, a, "mae", resamples=300, seed=0)
    assert mae["high"] < 0
    flipped = m.paired_delta("rating", a, b, "accuracy", resamples=300, seed=0)
    assert flipped == pytest.approx({"mean": -20.0, "low": -d["high"], "high": -d["low"]})
    with pytest.raises(ValueError, match="differ in shape"):
        m.paired_delta("rating", a, a[:10], "accuracy")
