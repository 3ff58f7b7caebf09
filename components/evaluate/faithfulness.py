"""Faithfulness and sanity of generated summaries, per example, beside ROUGE.

- unsupported facts: the share of a summary's facts (components/evaluate/facts.py) that its dialogue
  does not support: a summary that invents a name, an amount or a date fails even with a good ROUGE;
- name coverage: of the names the reference gives (and the dialogue supports), the share the output
  names too, by any of its words ("Ito" covers "Mr. Hugo Ito");
- degenerate output: empty, looping (a token or n-gram over and over), a copy of the prompt, or far
  outside the references' length range.

`example_stats` gives one row of sums per example, so the bootstrap of components/evaluate/metrics.py
turns them into rates with intervals and paired deltas like any other metric.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from components.evaluate.facts import MONTHS, URL, Fact, _zipf, extract

# Columns of example_stats, summed over examples by the bootstrap ("faithfulness" family in metrics.py).
STAT_COLUMNS = ("facts", "unsupported", "ref_names", "covered", "degenerate")
_WORD = re.compile(r"[a-z0-9]+")
_LOOP_CHARS = re.compile(r"(\S{1,8}?)\1{5,}")  # "2222222222", "abababababab"


@dataclass(frozen=True)
class Support:
    keys: frozenset
    words: frozenset  # lower-case words of the dialogue, e-mail addresses and links included
    squashed: str  # upper-case letters and digits only: finds "TK-2231" in "ticket TK 2231"
    names: frozenset = frozenset()  # lower-case capitalised words of the dialogue: "Ana" for a summary's "Anna"


# Words that state a number: "a couple of days" supports "2 days", "noon" "at 12".
_QUANTITY_WORDS = {"one": "1", "couple": "2", "pair": "2", "twice": "2", "both": "2", "dozen": "12", "once": "1",
                   "single": "1", "half": "0.5", "fortnight": "14", "noon": "12", "midday": "12", "midnight": "12"}
_SPLIT_DECIMAL = re.compile(r"(?<=\d)\. (?=\d\d\b)|(?<=[$€£]) (?=\d)")  # DialogSum's tokenised "$ 32. 42"
_AMBIGUOUS_MONTHS = {"may", "march"}  # as words, mostly not months
NAME_ZIPF = 5.0  # in a name of several words, a word this common ("Day", "City") need not be in the dialogue


def _derived_keys(f: Fact) -> set:
    """Keys a dialogue fact supports besides its own."""
    key = f.key
    if key[0] == "dates":  # 05/09 supports both of its readings
        return set(key[1])
    if key[0] == "time":  # "2:00" supports "at 2"
        return {("num", str(key[1] or 12))} | ({("num", str(key[2]))} if key[2] else set())
    out = set()
    if f.kind in ("email", "id") or (key[0] == "num" and len(key[1]) >= 5):
        out |= {k for run in re.findall(r"\d+", f.text) for k in (("num", str(int(run))), ("id", run))}
    if key[0] == "id" and re.fullmatch(r"[A-Z]*\d+(?:\.\d+)+", key[1]):  # version 11.1.1 supports 11.1 and 11
        number = re.sub(r"^[A-Z]+", "", key[1]).split(".")
        out |= {("num", ".".join(number[:i])) for i in range(1, len(number))}
    if key[0] == "num" and "." in key[1]:  # "4.99" supports "4"; "4.15" may be a time
        out.add(("num", key[1].split(".")[0]))
        hm = re.search(r"(\d{1,2})[.,](\d\d)$", f.text)
        if hm and int(hm.group(1)) < 24 and int(hm.group(2)) < 60:
            out.add(("time", int(hm.group(1)) % 12, int(hm.group(2))))
    if key[0] == "num" and re.fullmatch(r"(?:[01]\d|2[0-3])[0-5]\d", f.text):  # military "1930"
        out.add(("time", int(f.text[:2]) % 12, int(f.text[2:])))
    return out


@lru_cache(maxsize=4096)
def support_of(dialogue: str) -> Support:
    """What a dialogue can support: its facts (numbers written as words read as digits), the digit runs
    inside its e-mail addresses, links and ids ("anna.483920@example.com" supports "order 483920"), the
    hours of its times, and its words. A number inside a date ("September 5") supports no other number
    ("5 days")."""
    from text_to_num import alpha2digit

    text = _SPLIT_DECIMAL.sub(lambda m: "." if "." in m.group(0) else "", dialogue)
    keys = {f.key for f in extract(alpha2digit(text, "en"), text)}
    for f in extract(text, text):
        keys |= {f.key} | _derived_keys(f)
    for link in URL.finditer(text):
        keys |= {k for run in re.findall(r"\d+", link.group(0)) for k in (("num", str(int(run))), ("id", run))}
    tokens = _WORD.findall(text.lower())
    words = set(tokens) | {a + b for a, b in zip(tokens, tokens[1:])}  # "Power Shell" for "PowerShell"
    words |= {w.lower() for w in re.findall(r"[A-Z][a-z]+", text)}  # "Xbox" in the handle "@XboxSupport"
    keys |= {("num", v) for w, v in _QUANTITY_WORDS.items() if w in words}
    keys |= {("date", i + 1, None) for i, m in enumerate(MONTHS) if m in words and m not in _AMBIGUOUS_MONTHS}
    lower = set(re.findall(r"\b[a-z]+", text))
    mid = set(re.findall(r"(?<![.!?:\n]\s)(?<![.!?:\n])\b[A-Z][a-z]+\b", text))  # capitalised mid-sentence
    names = frozenset(w.lower() for w in re.findall(r"\b[A-Z][a-z]+\b", text) if w.lower() not in lower
                      and (w in mid or _zipf(w.lower()) < NAME_ZIPF))  # "Great" starting a sentence is no name
    return Support(frozenset(keys), frozenset(words), re.sub(r"[^A-Z0-9]", "", text.upper()), names)


def _name_word_supported(word: str, support: Support) -> bool:
    """A name's word is in the dialogue, or is a spelling variant of one of its names ("Anna" for "Ana",
    "Suzzanne" for "Suzanne"), or a demonym of one ("Italian" for "Italy")."""
    if word in support.words or (word.endswith("s") and word[:-1] in support.words):
        return True
    if "-" in word:  # "U-Tunes", "Wi-Fi" (WiFi)
        parts = word.split("-")
        return all(p in support.words for p in parts) or "".join(parts) in support.words
    if len(word) < 4:
        return False
    from difflib import SequenceMatcher

    for name in support.names:
        if name[0] != word[0] or len(name) < 3:
            continue
        if len(name) >= 4 and name[:4] == word[:4] and abs(len(name) - len(word)) <= 3:
            return True  # Italy/Italian, Korea/Korean, Jacky/Jack
        if SequenceMatcher(None, name, word).ratio() >= 0.8:
            return True
    return False


def _name_supported(words: tuple, support: Support) -> bool:
    """Every word of the name is supported; in a name of several words, very common words ("Day" of
    "Thanksgiving Day") may be missing if another word is there. "Light room" for "Lightroom"."""
    if len(words) > 1 and "".join(words) in support.words:
        return True
    missing = [w for w in words if not _name_word_supported(w, support)]
    if len(words) > 1 and len(missing) < len(words):
        return all(_zipf(w) >= NAME_ZIPF for w in missing)
    return not missing


def is_supported(fact: Fact, support: Support) -> bool:
    key = fact.key
    if fact.kind == "name":
        return _name_supported(key[1:], support)
    if key in support.keys:
        return True
    if key[0] == "num":
        return ("id", key[1]) in support.keys or (len(key[1]) >= 5 and "." not in key[1] and key[1] in support.squashed)
    if key[0] == "time":  # "9 am" by "before 9"
        return key[2] == 0 and ("num", str(key[1] or 12)) in support.keys
    if key[0] == "id":
        plain = key[1].replace(".", "")
        return ("num", plain.lstrip("0") or "0") in support.keys or (len(plain) >= 3 and plain in support.squashed)
    if key[0] == "dates":  # a numeric date: any of its readings
        return any(k in support.keys for k in key[1])
    if key[0] == "date" and key[2] is None:  # "in September": any date in September
        return any(k[0] == "date" and k[1] == key[1] for k in support.keys)
    if key[0] == "email":
        return key[1] in " ".join(support.words) or key[1].upper().replace(".", "") in support.squashed
    return False


def distinct(facts: list[Fact]) -> list[Fact]:
    """One fact per key: a summary that repeats the order number states one fact."""
    seen: dict[tuple, Fact] = {}
    for f in facts:
        seen.setdefault(f.key, f)
    return list(seen.values())


def unsupported_facts(summary: str, dialogue: str) -> tuple[list[Fact], list[Fact]]:
    """(the summary's distinct facts, those the dialogue does not support)."""
    support = support_of(dialogue)
    facts = distinct(extract(summary, dialogue))
    return facts, [f for f in facts if not is_supported(f, support)]


def name_coverage(candidate: str, references: list[str], dialogue: str) -> tuple[int, int]:
    """(names the best-covered reference gives that the dialogue supports, how many the candidate names)."""
    support = support_of(dialogue)
    said = set(_WORD.findall(candidate.lower()))
    options = []
    for ref in references:
        names = [f for f in distinct(extract(ref, dialogue)) if f.kind == "name" and is_supported(f, support)]
        if names:
            options.append((sum(any(w in said for w in f.key[1:] if len(w) > 1) for f in names) / len(names),
                            len(names)))
    if not options:
        return 0, 0
    share, n = max(options)
    return n, round(share * n)


def _ngram_loop(words: list[str], max_share: float) -> bool:
    """One token 4+ times in a row, or one n-gram (n <= 4) repeated so that it covers more than max_share
    of the output (at least 3 times)."""
    if any(len(set(words[i:i + 4])) == 1 for i in range(len(words) - 3)):
        return True
    for n in range(1, 5):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if not grams:
            break
        top = max(grams.count(g) for g in set(grams))
        if top >= 3 and top * n / len(words) > max_share and (n > 1 or len(words) >= 6):
            return True
    return False


def degenerate_reason(output: str, prompt: str, references: list[str], cfg) -> str | None:
    """Why an output is degenerate ('empty', 'loop', 'prompt copy', 'too short', 'too long'), or None.
    cfg: evaluate.faithfulness (its length ratios, repeat share and copy overlap)."""
    text = output.strip()
    if not text:
        return "empty"
    words = _WORD.findall(text.lower())
    if _LOOP_CHARS.search(text) or (len(words) >= 4 and _ngram_loop(words, cfg.max_repeat_share)):
        return "loop"
    prompt_words = _WORD.findall(prompt.lower())
    if len(words) >= 8:
        n = 8
        source = {tuple(prompt_words[i:i + n]) for i in range(len(prompt_words) - n + 1)}
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        share = sum(g in source for g in grams) / len(grams)
        if share >= cfg.copy_overlap and (len(words) >= 0.5 * len(prompt_words) or words[:5] == prompt_words[:5]):
            return "prompt copy"
    lengths = [len(_WORD.findall(r.lower())) for r in references if r.strip()]
    if lengths:
        if len(words) < cfg.min_length_ratio * min(lengths):
            return "too short"
        if len(words) > cfg.max_length_ratio * max(lengths):
            return "too long"
    return None


@dataclass(frozen=True)
class ExampleCheck:
    facts: list[Fact]
    unsupported: list[Fact]
    ref_names: int
    covered: int
    degenerate: str | None

    def row(self) -> list[float]:
        return [float(len(self.facts)), float(len(self.unsupported)), float(self.ref_names), float(self.covered),
                float(self.degenerate is not None)]


def check(output: str, prompt: str, references: list[str], cfg) -> ExampleCheck:
    """Every check on one output. prompt: the model's input (the dialogue inside its template)."""
    facts, bad = unsupported_facts(output, prompt)
    ref_names, covered = name_coverage(output, references, prompt)
    return ExampleCheck(facts, bad, ref_names, covered, degenerate_reason(output, prompt, references, cfg))


def example_stats(checks: list[ExampleCheck]) -> np.ndarray:
    return np.asarray([c.row() for c in checks], dtype=float).reshape(len(checks), len(STAT_COLUMNS))
