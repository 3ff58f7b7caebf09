"""Task metrics in four families, computed from per-example sufficient statistics.

Every family turns (prediction, references) into one row of numbers per example (`example_stats`);
every metric is a function of the column sums (`aggregate`). A bootstrap resample is then just a
weighted sum of rows, so confidence intervals and paired deltas over 1000 resamples cost a matrix
product instead of re-scoring text. Scales: percentages x 100, except MAE (stars, lower is better).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sacrebleu.metrics.bleu import BLEU
from seqeval.metrics.sequence_labeling import get_entities

from components.evaluate.rouge import ROUGE_KEYS, check_inputs, rouge_per_example


@dataclass(frozen=True)
class Family:
    metrics: tuple[str, ...]
    primary: str
    lower_is_better: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "rouge": Family(ROUGE_KEYS, "rougeL"),
    "rating": Family(("accuracy", "mae", "parsed"), "accuracy", ("mae",)),
    "ner": Family(("precision", "recall", "f1"), "f1"),
    "code": Family(("bleu", "exact_match"), "bleu"),
    # Checked beside a summarization task's own family; rows from components/evaluate/faithfulness.py.
    "faithfulness": Family(("unsupported", "name_coverage", "degenerate"), "unsupported",
                           ("unsupported", "degenerate")),
}
DEFAULT_FAMILY: dict[str, str] = {"summarization": "rouge", "dialogue_topic": "rouge", "review_rating": "rating",
                                  "ner": "ner", "code_translation": "code"}
MAX_RATING_ERROR = 4.0  # an unparsable rating counts as the worst possible miss on a 1..5 scale


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown metric family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(task: str, overrides: dict[str, str] | None = None) -> str:
    """The family scoring `task`: an override from the config, the default, else rouge."""
    name = (overrides or {}).get(task) or DEFAULT_FAMILY.get(task, "rouge")
    _family(name)
    return name


def primary_metric(family: str) -> str:
    return _family(family).primary


def metric_names(family: str) -> tuple[str, ...]:
    return _family(family).metrics


def lower_is_better(family: str) -> list[str]:
    return list(_family(family).lower_is_better)


# --- rating: first integer 1..5 ------------------------------------------------------------------

_INT = re.compile(r"\d+")


def parse_rating(text: str) -> int | None:
    """The first whole number in 1..5 ('4 stars' -> 4, '10/10' -> None), or None."""
    for m in _INT.finditer(text):
        if 1 <= int(m.group()) <= 5:
            return int(m.group())
    return None


def _rating_row(i: int, prediction: str, references: Sequence[str]) -> list[float]:
    golds = [g for g in (parse_rating(r) for r in references) if g is not None]
    if not golds:
        raise ValueError(f"example {i}: no reference is a rating 1..5: {list(references)!r}")
    pred = parse_rating(prediction)
    if pred is None:
        return [0.0, MAX_RATING_ERROR, 0.0]
    err = min(abs(pred - g) for g in golds)  # the closest reference, as ROUGE takes the best one
    return [float(err == 0), float(err), 1.0]


# --- ner: entity-level counts by seqeval over a shared mention sequence ---------------------------

def parse_entities(text: str) -> list[tuple[str, str]]:
    """'person: Bob; location: Paris' -> [(type, text)]; 'none' -> []; a piece with no ': ' is a
    mention of type 'unknown', so junk output still counts as (false) predictions."""
    out = []
    for piece in text.split(";"):
        piece = " ".join(piece.split())
        if not piece or piece.lower() == "none":
            continue
        kind, sep, mention = piece.partition(": ")
        out.append((kind.strip().lower(), mention.strip()) if sep and mention.strip() else ("unknown", piece))
    return out


def _keyed(mentions: list[tuple[str, str]]) -> set[tuple[str, str, int]]:
    """(type, text, occurrence): a repeated mention is a second entity, matched only by a second one."""
    seen: dict[tuple[str, str], int] = {}
    keys = set()
    for m in mentions:
        keys.add((*m, seen.get(m, 0)))
        seen[m] = seen.get(m, 0) + 1
    return keys


def ner_counts(prediction: str, reference: str) -> tuple[int, int, int]:
    """(true positives, predicted, gold) entities for one example.

    A generative model names entities instead of tagging tokens, so each distinct mention gets its
    own slot of tokens in a shared sequence; gold and predicted B-/I- tags are written into it and
    seqeval's span extraction counts exact (type, span) matches. A wrong type is one false positive
    and one missed entity."""
    gold, pred = _keyed(parse_entities(reference)), _keyed(parse_entities(prediction))
    slots = sorted(gold | pred)
    gold_tags: list[str] = []
    pred_tags: list[str] = []
    for slot in slots:
        kind, mention = slot[0], slot[1]
        span = [f"B-{kind}"] + [f"I-{kind}"] * (len(mention.split()) - 1)
        gold_tags += (span if slot in gold else ["O"] * len(span)) + ["O"]
        pred_tags += (span if slot in pred else ["O"] * len(span)) + ["O"]
    gold_spans, pred_spans = set(get_entities(gold_tags)), set(get_entities(pred_tags))
    return len(gold_spans & pred_spans), len(pred_spans), len(gold_spans)


def _ner_row(prediction: str, references: Sequence[str]) -> list[float]:
    rows = [ner_counts(prediction, r) for r in references]
    return [float(x) for x in max(rows, key=lambda c: _f1(*c))]  # best reference; ties -> first


def _f1(tp: float, n_pred: float, n_gold: float) -> float:
    return 1.0 if n_pred + n_gold == 0 else 2.0 * tp / (n_pred + n_gold)


def _ratio(num: np.ndarray, den: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """num/den where den > 0, else `empty` (1.0 when nothing was due nor given, else 0.0)."""
    return np.divide(num, den, out=empty.astype(float), where=den > 0)


# --- code: sacrebleu statistics + exact match -----------------------------------------------------

def _corpus_bleu() -> BLEU:
    return BLEU()  # sacrebleu.corpus_bleu's defaults: 13a tokenizer, exp smoothing, no effective order


def _code_stats(predictions: list[str], references: list[list[str]]) -> np.ndarray:
    width = max(len(r) for r in references)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]
    bleu = np.asarray(_corpus_bleu()._extract_corpus_statistics(predictions, streams), dtype=float)
    norm = " ".join
    exact = [[float(any(norm(p.split()) == norm(r.split()) for r in refs))] for p, refs in zip(predictions, references)]
    return np.hstack([bleu, np.asarray(exact)])


def _bleu(row: np.ndarray, metric: BLEU) -> float:
    return float(metric._compute_score_from_stats([int(round(x)) for x in row[:-1]]).score)


# --- the family API -------------------------------------------------------------------------------

def example_stats(family: str, predictions: list[str], references: list[list[str]]) -> np.ndarray:
    """(n, k) sufficient statistics. rouge: F of rouge1/2/L/Lsum in 0..1; rating: correct, abs error,
    parsed; ner: tp, n_pred, n_gold; code: sacrebleu's [hyp_len, ref_len, matches 1-4, totals 1-4]
    followed by exact match."""
    _family(family)
    if family == "faithfulness":
        raise ValueError("faithfulness statistics need the inputs: components/evaluate/faithfulness.py computes them")
    check_inputs(predictions, references)
    if family == "rouge":
        rows = [[r[k] for k in ROUGE_KEYS] for r in rouge_per_example(predictions, references)]
    elif family == "rating":
        rows = [_rating_row(i, p, refs) for i, (p, refs) in enumerate(zip(predictions, references))]
    elif family == "ner":
        rows = [_ner_row(p, refs) for p, refs in zip(predictions, references)]
    else:
        return _code_stats(predictions, references)
    return np.asarray(rows, dtype=float)


def _from_sums(family: str, sums: np.ndarray, n: int, only: str | None = None) -> dict[str, np.ndarray]:
    """Every metric (or just `only`) of each row of column sums over n examples; sums is (r, k)."""
    if family == "rouge":
        return {k: 100.0 * sums[:, j] / n for j, k in enumerate(ROUGE_KEYS)}
    if family == "rating":
        return {"accuracy": 100.0 * sums[:, 0] / n, "mae": sums[:, 1] / n, "parsed": 100.0 * sums[:, 2] / n}
    if family == "ner":
        tp, pred, gold = sums[:, 0], sums[:, 1], sums[:, 2]
        # Nothing predicted and nothing to find is perfect (100), never NaN.
        return {"precision": 100.0 * _ratio(tp, pred, gold == 0), "recall": 100.0 * _ratio(tp, gold, pred == 0),
                "f1": 100.0 * _ratio(2.0 * tp, pred + gold, pred + gold == 0)}
    if family == "faithfulness":  # facts, unsupported, reference names, covered, degenerate
        facts, bad, names, covered = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
        return {"unsupported": 100.0 * _ratio(bad, facts, np.zeros_like(facts)),  # no facts: none invented
                "name_coverage": 100.0 * _ratio(covered, names, names == 0),  # no names due: all covered
                "degenerate": 100.0 * sums[:, 4] / n}
    out = {"exact_match": 100.0 * sums[:, -1] / n}
    if only != "exact_match":
        metric = _corpus_bleu()
        out["bleu"] = np.array([_bleu(row, metric) for row in sums])
    return out


def _check_stats(family: str, stats: np.ndarray) -> np.ndarray:
    stats = np.asarray(stats, dtype=float)
    if stats.ndim != 2 or len(stats) == 0:
        raise ValueError(f"expected a non-empty (n, k) array of {family} statistics, got shape {stats.shape}")
    return stats


def aggregate(family: str, stats: np.ndarray) -> dict[str, float]:
    """Every metric of the family over all examples; corpus BLEU equals sacrebleu.corpus_bleu."""
    stats = _check_stats(family, stats)
    got = _from_sums(family, stats.sum(axis=0, keepdims=True), len(stats))
    return {k: float(got[k][0]) for k in metric_names(family)}


def score(family: str, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    return aggregate(family, example_stats(family, predictions, references))


def example_scores(family: str, stats: np.ndarray) -> np.ndarray:
    """Per-example 0..100, higher is better, to rank the worst examples. rouge: ROUGE-L F; rating:
    100 - 25 x error; ner: F1 (nothing due, nothing given = 100); code: sentence BLEU with
    sacrebleu.sentence_bleu's settings (exp smoothing, effective order) from the row's statistics."""
    stats = _check_stats(family, stats)
    if family == "rouge":
        return 100.0 * stats[:, ROUGE_KEYS.index("rougeL")]
    if family == "rating":
        return 100.0 - 25.0 * stats[:, 1]
    if family == "ner":
        return 100.0 * np.array([_f1(*row) for row in stats])
    sentence = BLEU(effective_order=True)
    return np.array([_bleu(row, sentence) for row in stats])


def _resample_sums(stats_list: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Column sums of `resamples` bootstrap samples, the same sample indices for every array."""
    n = len(stats_list[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // n))  # bounds the (chunk, n) count matrix
    out: list[list[np.ndarray]] = [[] for _ in stats_list]
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(r, n))
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n).reshape(r, n)
        for acc, stats in zip(out, stats_list):
            acc.append(counts @ stats)
    return [np.vstack(acc) for acc in out]


def _check_bootstrap(family: str, metric: str, resamples: int, confidence: float) -> None:
    if metric not in metric_names(family):
        raise ValueError(f"{metric!r} is not a {family} metric: {metric_names(family)}")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(family: str, stats: np.ndarray, metric: str, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric`, resampling examples with replacement."""
    _check_bootstrap(family, metric, resamples, confidence)
    stats = _check_stats(family, stats)
    (sums,) = _resample_sums([stats], resamples, seed)
    return _interval(_from_sums(family, sums, len(stats), only=metric)[metric], confidence)


def paired_delta(family: str, stats_a: np.ndarray, stats_b: np.ndarray, metric: str, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """a - b on the same examples: `mean` is the observed difference, low/high the percentile
    interval of the difference over paired resamples (both systems see the same indices). The sign
    is always a - b; for lower-is-better metrics the caller reads a negative delta as a gain."""
    _check_bootstrap(family, metric, resamples, confidence)
    stats_a, stats_b = _check_stats(family, stats_a), _check_stats(family, stats_b)
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"paired statistics differ in shape: {stats_a.shape} vs {stats_b.shape}")
    n = len(stats_a)
    observed = aggregate(family, stats_a)[metric] - aggregate(family, stats_b)[metric]
    sums_a, sums_b = _resample_sums([stats_a, stats_b], resamples, seed)
    deltas = _from_sums(family, sums_a, n, only=metric)[metric] - _from_sums(family, sums_b, n, only=metric)[metric]
    low, high = _interval(deltas, confidence)
    return {"mean": float(observed), "low": low, "high": high}
