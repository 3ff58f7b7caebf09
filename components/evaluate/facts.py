"""The checkable facts of a text: amounts and numbers, dates, ids, emails and names, each with the span it
was written at and a normalised key, so "58,95" and "58.95 euros", "5 September" and "Sept. 5th", "Mr. Ito"
and "Ito" compare equal. A summary's fact is supported when the dialogue holds a fact with its key (a
name: its words, or a spelling variant or demonym of a name in the dialogue).

Libraries do the parsing: price-parser reads amounts (decimal comma or point, thousands separators),
python-dateutil reads dates, text2num reads numbers written as words, wordfreq says whether a capitalised
word that starts a sentence is a common word or a name. What is matched by rules here: where facts are.

Known misses (measured by benchmarks/faithfulness_detector.py at --n 150 --seed 0, 600 chats: recall of a
replaced fact 0.99 for names, 1.00 for numbers, amounts, dates and ids; 0.7 % of honest reference facts
flagged, 0.4 % of names, 3 % of numbers): invented names that are English words ("Rich", "May", "Summer",
"Will", "Mark") or that are part of a name in the chat ("Adam" with "Adams"); lower-case names ("laptop
stand"); true facts attached to the wrong person or thing (both are in the chat); relative dates
("tomorrow"), weekdays that contradict the date, paraphrased or derived quantities ("a dozen" is read, "two
girls and a man" is not "three"). On honest references it flags typos of supported names ("Winny" for
Vinny), capitalised English words that are as frequent in Dutch or French ("Direct", "Later"), and counts
the summary derives.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?")
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<year>(?:19|20)\d\d))?"
DATE_WORDS = [
    re.compile(rf"\b{_DAY}(?:\s+of)?\s+(?P<month>(?i:{_MONTH}))(?!\w){_YEAR}"),  # 5 September, 5th of sept. 2024
    re.compile(rf"\b(?P<month>(?i:{_MONTH}))\s+{_DAY}\b{_YEAR}"),  # September 5, Sept. 5th, aug 10, 2024
    # A month alone only after a preposition or with a year: "May I ask" is not a date.
    re.compile(rf"\b(?:in|on|since|until|by|from|of|during|before|after|early|late|mid)\s+(?P<month>{_MONTH})"
               rf"(?![\w]){_YEAR}|\b(?P<month2>{_MONTH})\s+(?P<year2>(?:19|20)\d\d)\b"),
]
NUMERIC_DATE = re.compile(r"\b(?:(?P<y>(?:19|20)\d\d)-(?P<m>\d\d)-(?P<d>\d\d)|(?P<a>\d{1,2})/(?P<b>\d{1,2})"
                          r"(?:/(?P<yy>\d{2,4}))?)\b")
WEEKDAY = re.compile(r"\b(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)s?\b")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+|(?<![\w.+-])@\w+")  # links and handles: not facts a summary restates
# Times: "19:30", "7.30 pm", "at 4.30", "3 PM" (a dotted time needs am/pm or a preposition before it).
_AMPM = r"(?:\s*[ap]\.?m\b\.?)"
TIME = re.compile(rf"\b(?P<h>[01]?\d|2[0-3]):(?P<mi>[0-5]\d){_AMPM}?|\b(?P<h2>[01]?\d|2[0-3])\.(?P<mi2>[0-5]\d){_AMPM}|"
                  rf"\b(?:at|around|by|until|till|from|before|after)\s(?P<h3>[01]?\d|2[0-3])\.(?P<mi3>[0-5]\d)\b"
                  rf"(?!\.\d){_AMPM}?|\b(?P<h4>1[0-2]|0?[1-9]){_AMPM}", re.I)
UNIT = re.compile(r"\b(\d{1,6})(?:mbps|gbps|kbps|mb|gb|tb|kb|kg|g|km|mi|cm|mm|ml|hrs?|mins?|secs?|days?)\b")
PERSON = re.compile(r"#Person\d+#")  # DialogSum's speaker placeholders: names, not ids
ID = re.compile(r"#\d+\b|\b[A-Za-z]*\d+(?:\.\d+){2,}\b|\b[A-Za-z]+\d+(?:\.\d+)+\b|"  # #4417, versions 11.1.2, iOS11.1
                r"\b(?!\d+(?:st|nd|rd|th)\b)(?=[A-Za-z-]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\b")
NUMBER = re.compile(r"(?<![\w.,])[$€£]?\s?\d+(?:[.,\s]\d{3})*(?:[.,]\d+)?(?:st|nd|rd|th)?(?![\w])|"
                    r"(?<![\w.,])[$€£]?\s?\d*[.,]\d+(?![\w])")
_UNITS = ("zero|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
          "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand")
NUMBER_WORDS = re.compile(rf"\b(?:(?:{_UNITS}|one|and)[\s-]+)*(?:{_UNITS})\b(?:[\s-]+(?:{_UNITS}|one))*", re.I)
_ORDINALS = {"third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
             "eleventh": 11, "twelfth": 12, "fifteenth": 15, "twentieth": 20, "thirtieth": 30}  # not first/second
ORDINAL_WORDS = re.compile(rf"\b(?:{'|'.join(_ORDINALS)})\b", re.I)
_SUFFIX = r"(?:['’](?:s|ll|re|d|ve|m)\b|['’](?!\w))"  # Hugo's, Mohammad'll, James'
NAME_TOKEN = re.compile(rf"\b[A-Z][a-zA-Z]*(?:-[A-Z][a-zA-Z]+)?{_SUFFIX}?")
TITLES = {"mr", "mrs", "ms", "miss", "dr", "sir", "madam", "prof", "st"}
NOT_NAMES = {"i", "i'm", "i've", "i'll", "i'd", "ok", "okay", "hi", "hello", "hey", "thanks", "dear", "yes", "no",
             "customer", "agent", "user", "client", "speaker", "representative", "customers", "agents", "users",
             "clients", "representatives", "rep", "url", "link", "dm", "pm", "am", "ps", "btw", "lol", "omg", "today",
             "todays", "today's", "tonight", "tomorrow", "yesterday"}  # roles, chat words, relative days
SENTENCE_START = re.compile(r"(?:^|[.!?:;\n\"“(]\s*|\n\s*)$")
MID_ZIPF = 3.0  # mid-sentence, a capitalised word at least this frequent, in English only, is a word
COMMON_ZIPF = 4.8  # a sentence-initial word at least this frequent in English is read as a word ...
OTHER_LANGUAGES = ("de", "fr", "es", "it", "nl", "pt", "pl")  # ... unless it is as frequent abroad: a name
FUNCTION_WORDS = 300  # the most frequent English words never start a name


@dataclass(frozen=True)
class Fact:
    kind: str  # amount | number | id | date | email | name
    text: str  # as written
    key: tuple  # normalised: equal keys, the same fact
    start: int
    end: int


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """Blank out spans already read (same length, so later offsets still point into the original)."""
    chars = list(text)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    return "".join(chars)


def number_value(text: str) -> str | None:
    """The canonical decimal of an amount or number as written ('58,95' -> '58.95', '1,000' -> '1000')."""
    from price_parser import Price

    raw = re.sub(r"(st|nd|rd|th)$", "", text.strip())
    amount = Price.fromstring(raw).amount
    if amount is None:
        return None
    try:
        return format(Decimal(amount).normalize(), "f")
    except InvalidOperation:
        return None


def _month(token: str) -> int:
    word = token.rstrip(".").lower()
    return next(i + 1 for i, m in enumerate(MONTHS) if m.startswith(word[:3]))


def _month_full(written: str) -> bool:
    return bool(re.search(rf"(?i:{'|'.join(MONTHS)})\.$", written))


def _date_facts(text: str) -> list[Fact]:
    from dateutil import parser as dates

    out: list[Fact] = []
    for pattern in DATE_WORDS:
        for m in pattern.finditer(text):
            g = m.groupdict()
            start = min(m.start(k) for k in ("day", "month", "month2") if g.get(k))  # not the preposition
            if any(f.start <= start < f.end for f in out):
                continue
            month = _month(g.get("month") or g.get("month2"))
            day = int(g["day"]) if g.get("day") else None
            if day is not None:
                try:  # dateutil checks the day fits the month ("February 31" is not a date)
                    dates.parse(text[start:m.end()], default=datetime(2000, 1, 1), fuzzy=True)
                except (ValueError, OverflowError):
                    continue
            end = m.end() - (text[m.end() - 1] == "." and _month_full(text[start:m.end()]))  # "in May." -> "May"
            out.append(Fact("date", text[start:end], ("date", month, day), start, end))
    return out


def _numeric_date_keys(m: re.Match) -> set[tuple]:
    """Every reading of a numeric date: 05/09 is May 9 or 5 September, depending on the writer."""
    if m.group("y"):
        return {("date", int(m.group("m")), int(m.group("d")))}
    a, b = int(m.group("a")), int(m.group("b"))
    return {("date", mo, d) for mo, d in ((a, b), (b, a)) if 1 <= mo <= 12 and 1 <= d <= 31}


@lru_cache(maxsize=100_000)
def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


def _word_of(m: re.Match) -> str:
    """A name token's key word: lower case, without possessive or contraction ("Hugo's" -> "hugo")."""
    return re.sub(rf"{_SUFFIX}$", "", m.group(0)).strip("#").lower()


def _is_name(run: list[re.Match], text: str, context: str) -> bool:
    """A capitalised run is a name, unless it is one English word: an acronym the dialogue writes in lower
    case ("IS", "ASAP"), a common word that starts a sentence ("Refunds"), or a word capitalised by mistake
    mid-sentence ("procedure,Finally", "Agent Replied"). Names are as frequent abroad as in English."""
    if len(run) > 1:
        return True
    bare = re.sub(rf"{_SUFFIX}$", "", run[0].group(0))
    lower = bare.lower()
    if len(lower) < 2:
        return False
    if re.search(rf"(?<![.!?]\s)(?<!^)\b{re.escape(bare)}\b", context):  # capitalised mid-sentence elsewhere
        return True
    english = _zipf(lower)
    if bare.isupper():
        return english < MID_ZIPF and not re.search(rf"\b{re.escape(lower)}\b", context)
    if lower in _function_words():  # "So", "Will"
        return False
    if SENTENCE_START.search(text[:run[0].start()]):
        if re.search(rf"\b{re.escape(lower)}s?\b", context):  # written in lower case: a word
            return False
        if english >= COMMON_ZIPF and _zipf_abroad(lower) < english - 0.3:
            return False
    floor = MID_ZIPF - 1 if re.search(r"(?:ing|ed|ly)$", lower) else MID_ZIPF
    return english < floor or _zipf_abroad(lower) >= english - 1.0


@lru_cache(maxsize=1)
def _function_words() -> frozenset[str]:
    from wordfreq import top_n_list

    return frozenset(top_n_list("en", FUNCTION_WORDS))


@lru_cache(maxsize=100_000)
def _zipf_abroad(word: str) -> float:
    """Names are frequent in every language; 'refunds' or 'customer' only in English."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, lang) for lang in OTHER_LANGUAGES)


def _calendar_word(word: str) -> bool:
    w = word.rstrip(".")
    return w in MONTHS or w in WEEKDAYS or w.rstrip("s") in WEEKDAYS


def _name_facts(text: str, masked: str, context: str) -> list[Fact]:
    tokens = [m for m in NAME_TOKEN.finditer(masked) if _word_of(m).rstrip(".") not in NOT_NAMES
              and m.group(0).lower() not in NOT_NAMES and not _calendar_word(_word_of(m))]
    runs: list[list[re.Match]] = []
    for m in tokens:  # adjacent capitalised tokens ("Hugo Novak", "Mr. Ito", "J. K. Rowling") form one name
        if runs:
            prev, gap = runs[-1][-1], masked[runs[-1][-1].end():m.start()]
            joined = gap == " " or (gap == ". " and (_word_of(prev) in TITLES or len(prev.group(0)) == 1))
            if joined and not re.search(rf"{_SUFFIX}$", prev.group(0)):  # "Hugo's Anna" is two names
                runs[-1].append(m)
                continue
        runs.append([m])
    out = []
    for run in runs:
        while len(run) > 1 and SENTENCE_START.search(text[:run[0].start()]) and _word_of(run[0]) not in TITLES \
                and len(run[0].group(0)) > 1 and not _is_name(run[:1], text, context):
            run = run[1:]  # "The Family plan" -> "Family", "Thus Mr. Smith" -> "Mr. Smith"
        words = tuple(w for w in map(_word_of, run) if w not in TITLES)
        if words and _is_name(run, text, context):
            out.append(Fact("name", text[run[0].start():run[-1].end()], ("name",) + words, run[0].start(),
                            run[-1].end()))
    return out


def _time_key(m: re.Match) -> tuple:
    """("time", hour on a 12-hour clock, minute): "19:30", "7.30 pm" and "7:30" are one time."""
    g = m.groupdict()
    h = next(int(g[k]) for k in ("h", "h2", "h3", "h4") if g.get(k))
    mi = next((int(g[k]) for k in ("mi", "mi2", "mi3") if g.get(k)), 0)
    return ("time", h % 12, mi)


def _number_kind(written: str, value: str) -> str:
    digits = re.sub(r"\D", "", written)
    if len(digits) >= 5 and "." not in value:
        return "id"  # order numbers, phone numbers
    return "amount" if "." in value or re.search(r"[$€£]", written) else "number"


def extract(text: str, context: str = "") -> list[Fact]:
    """The facts of text in reading order. context: other text by the same writers (the dialogue), which
    tells a name from a word at the start of a sentence."""
    from text_to_num import text2num

    facts: list[Fact] = []

    def add(fact: Fact) -> None:
        facts.append(fact)

    def masked_now() -> str:
        return _mask(text, skip + [(f.start, f.end) for f in facts])

    skip = [(m.start(), m.end()) for m in URL.finditer(text)]
    for m in PERSON.finditer(text):
        add(Fact("name", m.group(0), ("name", m.group(0).strip("#").lower()), m.start(), m.end()))
    for m in EMAIL.finditer(masked_now()):
        add(Fact("email", m.group(0), ("email", m.group(0).lower()), m.start(), m.end()))
    for f in _date_facts(masked_now()):
        add(f)
    for m in NUMERIC_DATE.finditer(masked_now()):
        readings = tuple(sorted(_numeric_date_keys(m)))
        if readings:  # ("dates", readings): the same fact as any date it can be read as
            add(Fact("date", m.group(0), ("dates", readings), m.start(), m.end()))
    for m in TIME.finditer(masked_now()):
        start = min(m.start(k) for k in ("h", "h2", "h3", "h4") if m.group(k))
        end = m.start() + len(m.group(0).rstrip())
        end -= bool(re.search(r"(?<!\.)m\.$", text[start:end]))  # "7.30 pm." ends a sentence; "7.30 p.m." keeps it
        add(Fact("number", text[start:end], _time_key(m), start, end))
    for m in UNIT.finditer(masked_now()):  # "100mbps", "5kg": the number is the fact
        add(Fact("number", m.group(0), ("num", str(int(m.group(1)))), m.start(), m.end()))
    for m in ID.finditer(masked_now()):
        key = ("id", re.sub(r"[^A-Z0-9.]", "", m.group(0).upper()).strip("."))
        add(Fact("id", m.group(0), key, m.start(), m.end()))
    for m in NUMBER.finditer(masked_now()):
        value = number_value(m.group(0))
        if value is not None:
            start = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
            add(Fact(_number_kind(m.group(0), value), m.group(0).strip(), ("num", value), start, m.end()))
    for m in NUMBER_WORDS.finditer(masked_now()):
        try:
            value = text2num(m.group(0).replace("-", " ").lower(), "en")
        except ValueError:
            continue
        add(Fact("number", m.group(0), ("num", str(value)), m.start(), m.end()))
    for m in ORDINAL_WORDS.finditer(masked_now()):
        add(Fact("number", m.group(0), ("num", str(_ORDINALS[m.group(0).lower()])), m.start(), m.end()))
    facts += _name_facts(text, masked_now(), context)
    return sorted(facts, key=lambda f: f.start)
