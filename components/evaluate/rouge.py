"""ROUGE-1/2/L/Lsum with Google's rouge-score against one or more references per example.

`evaluate.load("rouge")` needs the hub, so the scorer is used directly. Each example is scored
against every reference and the best F-measure per ROUGE type is kept (`RougeScorer.score_multi`),
the usual convention for multi-reference sets such as DialogSum (3) and TweetSumm (2-3).
ROUGE-Lsum treats each newline-separated line as a sentence, so texts are split into sentences
first; nltk's punkt data is not available offline, hence a small regex splitter.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

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


def check_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Aligned, non-empty lists; every example has at least one reference string.

    A bare string as an example's references is refused: it would silently be scored as a list
    of one-character references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("cannot score an empty evaluation set")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(f"example {i}: references must be a list of strings, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"example {i} has no references")
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"example {i}: every reference must be a string")


def make_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


def score_multi(scorer: rouge_scorer.RougeScorer, prediction: str, references: Sequence[str]) -> dict[str, float]:
    """F-measure in [0, 1] of one prediction against its best reference, per ROUGE type."""
    scores = scorer.score_multi([split_sentences(r) for r in references], split_sentences(prediction))
    return {k: float(scores[k].fmeasure) for k in ROUGE_KEYS}


def rouge_per_example(predictions: list[str], references: list[list[str]]) -> list[dict[str, float]]:
    """Per-example best-reference F-measures in [0, 1], in input order."""
    check_inputs(predictions, references)
    scorer = make_scorer()
    out = [score_multi(scorer, p, refs) for p, refs in zip(predictions, references)]
    for i, row in enumerate(out):
        if any(math.isnan(v) for v in row.values()):
            raise ValueError(f"ROUGE produced NaN for example {i}: {row}")
    return out


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean best-reference ROUGE F-measure x 100 over the examples."""
    rows = rouge_per_example(predictions, references)
    return {k: 100.0 * sum(r[k] for r in rows) / len(rows) for k in ROUGE_KEYS}
