"""ROUGE-1/2/L/Lsum with Google's rouge-score, reported as mean F-measure x 100.

`evaluate.load("rouge")` needs the hub, so the scorer is used directly. ROUGE-Lsum treats each
newline-separated line as a sentence, so texts are split into sentences first; nltk's punkt data
is not available offline, hence a small regex splitter.
"""
from __future__ import annotations

import math
import re

from rouge_score import rouge_scorer

ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at . ! or ? followed by whitespace; "12.99" and "e.g.x" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_sentences(text: str) -> str:
    """One sentence per line, as ROUGE-Lsum expects."""
    lines = []
    for line in text.strip().splitlines():
        lines += [s.strip() for s in _SENTENCE_END.split(line.strip()) if s.strip()]
    return "\n".join(lines)


def score_pair(scorer: rouge_scorer.RougeScorer, prediction: str, reference: str) -> dict[str, float]:
    """F-measure in [0, 1] of one prediction against one reference."""
    scores = scorer.score(split_sentences(reference), split_sentences(prediction))
    return {k: scores[k].fmeasure for k in ROUGE_KEYS}


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F-measure x 100 over aligned prediction/reference lists."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("cannot score an empty evaluation set")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references):
        for k, v in score_pair(scorer, pred, ref).items():
            totals[k] += v
    out = {k: 100.0 * v / len(predictions) for k, v in totals.items()}
    if any(math.isnan(v) for v in out.values()):
        raise ValueError(f"ROUGE produced NaN: {out}")
    return out
