"""PII redaction: emails, phones, cards, IBANs, IPs, credential-carrying URLs and @handles -> typed placeholders.

Regexes find candidates cheaply; libraries validate them (phonenumbers, stdnum Luhn/IBAN, ipaddress), so
order numbers, prices, dates and versions survive. Stages run in a fixed order so a longer or more
specific match is never half-eaten by a later one: URL > email > IPv6 > IBAN > card > IPv4 > phone > handle.
A match of a type not in cfg.types is still found, but kept verbatim and shielded from later stages.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
from phonenumbers import PhoneNumberType
from stdnum import iban as _iban
from stdnum import luhn

from components.common.config import PiiConfig

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "card": "<CARD>", "iban": "<IBAN>", "ip": "<IP>",
                "url_token": "<URL>", "handle": "<HANDLE>"}

# Literal-prefixed patterns let the regex engine skip ahead fast; boundaries are checked in the callbacks.
_URL = re.compile(r"(?:https?://|ftp://|www\.|HTTPS?://|WWW\.)[^\s<>\"'`{}|\\^]+")
_URL_TRAIL = ".,;:!?)]}'\"*"
_EMAIL_AT = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+(?:[a-z]{2,24}|[A-Z]{2,24})\b")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+\-]+\Z")  # searched in the 64 chars before the '@'
_IBAN = re.compile(r"[A-Z][A-Z]\d\d(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"\d(?:[ \-]?\d){12,}")
# Brand prefix -> lengths: Visa, Mastercard, Amex, Diners, JCB, Maestro/Discover/UnionPay.
_CARD_BRAND = re.compile(r"(4)|(5[1-5]|2[2-7])|(3[47])|(3[068])|(35)|(5[06-8]|6)")
_CARD_LENGTHS = [(13, 16, 19), (16,), (15,), (14, 16), (16, 17, 18, 19), (16, 17, 18, 19)]
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_VERSION_CTX = re.compile(r"\b(?:version|ver|v|beta|alpha|build|firmware|release|patch|updated? to)[\s(:]{0,2}\Z",
                          re.IGNORECASE)  # "beta (1.16.0.53)" is a version, not an IPv4 address
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)")
# Phone candidates: a digit run with separators holding >= 7 digits (checked after the match). The
# boundary lookbehind sits after the first character so the engine can skip ahead on [+(\d]; a raw
# JSON \n escape right before the number counts as a boundary.
_PHONE = re.compile(r"[+(\d](?:(?<![\w.+\-@].)|(?<=\\[nrt].))[\d ().\-/]{5,}\d(?!\w)")
# Fictional/unallocated NANP numbers (555-867-5309) fail phonenumbers' validity check but are
# unambiguously phone-shaped: 3-3-4 digits with separators, optional +1.
_NANP = re.compile(r"(?<![\d.])(?:\+?1[ .\-]?)?(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?!\d)")
# Twitter-style @handle; digits-only handles need 4+ digits so "@12" or "@10:30" is not one.
_HANDLE = re.compile(r"@(?:(?<![\w@.+\-/]@)|(?<=\\[nrt]@))(?!\d{1,3}(?!\w))\w{1,30}(?![\w@]|\.\w)", re.ASCII)
_IBAN_HINT = re.compile(r"[A-Z][A-Z]\d\d")
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d")
_DATE = re.compile(r"\b(?:\d{1,2}[./\-]\d{1,2}[./\-](?:19|20)\d\d|(?:19|20)\d\d[./\-]\d{1,2}[./\-]\d{1,2})\b")
_DOT_DIGIT = re.compile(r"\.\d(?!\d)")
_GROUP_END = re.compile(r"\d{3}[ \-]?\Z")  # searched up to a phone's start: digits right before it
_DIGITS7 = re.compile(r"\d(?:[ ().\-/]?\d){6}")

# Query/fragment keys that carry credentials: matched whole, or as a _/- separated part.
_SECRET_KEYS = {"token", "key", "api_key", "apikey", "access_token", "refresh_token", "id_token", "sig",
                "signature", "password", "passwd", "pwd", "pass", "auth", "session", "sessionid",
                "session_id", "sid", "code", "secret", "client_secret", "credential", "otp"}
_SECRET_PARTS = {"token", "signature", "secret", "password", "passwd", "apikey", "sig", "credential"}
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{16,}")
_CLASS_SWITCH = re.compile(r"(?<=\d)[A-Za-z]|(?<=[A-Za-z])\d|(?<=[a-z])[A-Z]|(?<=[A-Z])[a-z]")
_UPPER_PAIR = re.compile(r"(?=[A-Z]{2})")
_KEEP_BASE = 0xF0000  # private-use code points stand in for kept matches until the end
_KEPT = re.compile("[\U000F0000-\U000FFFFD]")


def _secret_key(key: str) -> bool:
    k = key.strip().lower().replace("-", "_")
    return k in _SECRET_KEYS or any(p in _SECRET_PARTS for p in k.split("_"))


def _random_looking(seg: str) -> bool:
    """A long id/token (JWT, hex digest, share link id), not a word slug like Basic-Troubleshooting-4."""
    if not _SEGMENT.fullmatch(seg):
        return False
    digits, letters = sum(c.isdigit() for c in seg), sum(c.isalpha() for c in seg)
    switches = len(_CLASS_SWITCH.findall(seg))
    if digits >= 2 and letters >= 2:
        return switches >= len(seg) / 5
    # Letters only: random text has few vowels and many upper-case pairs; words and CamelCase do not.
    vowels, upper_pairs = sum(c in "aeiouAEIOU" for c in seg), len(_UPPER_PAIR.findall(seg))
    return letters >= 16 and switches >= len(seg) / 6 and (vowels < 0.25 * letters or upper_pairs >= 4)


def _url_kind(url: str) -> tuple[bool, str | None]:
    """(carries a credential, IP-literal host or None)."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        host = parts.hostname
    except ValueError:
        return False, None
    if "@" in parts.netloc:  # userinfo: user:pass@host
        return True, None
    for q in (parts.query, parts.fragment):  # ?token=..., #access_token=..., ?email=a@b.com
        if "=" in q and any(v and (_secret_key(k) or "@" in v) for k, v in parse_qsl(q, keep_blank_values=True)):
            return True, None
    if any(len(seg) >= 16 and _random_looking(seg) for seg in parts.path.split("/")):
        return True, None
    return False, host if host and _is_ip(host) else None


def _is_ip(raw: str) -> bool:
    try:  # a bare "::" is an emoticon-ish token far more often than the unspecified address
        return raw.strip(":") != "" and bool(ipaddress.ip_address(raw))
    except ValueError:
        return False


def _splice(raw: str, seps: str, ok: Callable[[str], bool], kind: str, mark: Callable[[str, str], str],
            whole_first: bool = True, whole_last: bool = True) -> str:
    """Mark the earliest, longest run of whole groups that passes ok: a candidate run may carry
    neighbouring numbers or code words ("DY11 PL11 8832 ...", "4111 1111 1111 1111 2")."""
    cuts = [i for i, c in enumerate(raw) if c in seps]
    for a in ([0] if whole_first else []) + [i + 1 for i in cuts]:
        for b in reversed(cuts + ([len(raw)] if whole_last else [])):
            if b > a and ok(raw[a:b]):
                return raw[:a] + mark(kind, raw[a:b]) + raw[b:]
    return raw


def _iban_ok(s: str) -> bool:
    return len(s) >= 15 and bool(_IBAN_HINT.match(s)) and _iban.is_valid(s, check_country=False)


def _card_ok(s: str) -> bool:
    if not 13 <= len(s) <= 24:
        return False
    groups = re.split("[ -]", s)  # one separator style, groups of 3-6 digits (4-4-4-4, 4-6-5, ...)
    if len(groups) > 1 and (("-" in s and " " in s) or any(not 3 <= len(g) <= 6 for g in groups)):
        return False
    digits = "".join(groups)
    brand = _CARD_BRAND.match(digits)
    return bool(brand) and len(digits) in _CARD_LENGTHS[brand.lastindex - 1] and luhn.is_valid(digits)


@lru_cache(maxsize=8192)  # ingest redacts a row's raw text and its fields: the same candidates twice
def _phone_spans(cand: str, lo: int, hi: int, regions: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Phone spans in cand[lo:hi], as offsets into cand."""
    spans: list[tuple[int, int]] = []
    text = cand[lo:hi]
    if sum(map(text.count, "0123456789")) < 7:
        return ()
    for region in ([None] if "+" in text else []) + list(regions):  # None: only +country numbers parse
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            raw = m.raw_string.lstrip("(") if ")" not in m.raw_string else m.raw_string
            start, end = lo + m.end - len(raw), lo + m.end
            # a dot before a single digit is a version (61.0.3163.100, 11.1), not 01.42.68.53.00
            if ("." in raw and _DOT_DIGIT.search(raw)) or _DATE.search(raw):
                continue
            # Without +/0 a national number must be a mobile (IN 98765 43210): a bare 1497421950 that is
            # only valid as an Indian landline is more often a ticket number. A tail of a longer digit
            # string (8825 1127 4235 9869) is not a phone either.
            if raw[0] not in "+(" and (_GROUP_END.search(cand, 0, start) or (
                    region != "US" and raw[0] != "0" and phonenumbers.number_type(m.number)
                    not in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE))):
                continue
            if all(end <= s or start >= e for s, e in spans):
                spans.append((start, end))
        if sum(e - s for s, e in spans) >= len(text) - 2:
            break  # all of it is one or more phones: other regions cannot add anything
    for m in _NANP.finditer(text):
        if all(lo + m.end() <= s or lo + m.start() >= e for s, e in spans):
            spans.append((lo + m.start(), lo + m.end()))
    return tuple(spans)


class Redactor:
    def __init__(self, cfg: PiiConfig):
        self.enabled = cfg.enabled
        self.types = set(cfg.types)
        self.regions = tuple(cfg.phone_regions)

    def redact(self, text: str) -> tuple[str, Counter]:
        counts: Counter = Counter()
        if not self.enabled or not isinstance(text, str) or (len(text) < 7 and "@" not in text):
            return text, counts  # nothing shorter than 7 chars is PII but an @handle
        kept: list[str] = []

        def mark(kind: str, value: str) -> str:
            if kind in self.types:
                counts[kind] += 1
                return PLACEHOLDERS[kind]
            kept.append(value)  # found but not redacted: shield it from later stages
            return chr(_KEEP_BASE + len(kept) - 1)

        if "://" in text or "www." in text or "WWW." in text:
            text = _URL.sub(lambda m: self._url(m.group(0), mark), text)
        if "@" in text:
            text = self._emails(text, mark)
        if _IPV6_HINT.search(text):  # literal-prefixed hint: cheap on ordinary text
            text = _IPV6.sub(lambda m: mark("ip", m.group(0)) if _is_ip(m.group(0)) else m.group(0), text)
        ndigits = sum(map(text.count, "0123456789"))  # str.count is far faster than a regex scan
        # Cards, IBANs and phones all hold a run of >= 7 digits; most texts with digits have none.
        long_run = ndigits >= 7 and _DIGITS7.search(text) is not None
        if long_run and _IBAN_HINT.search(text):
            text = _IBAN.sub(lambda m: self._iban(m, mark), text)
        if long_run and ndigits >= 13:
            text = _CARD.sub(lambda m: self._card(m, mark), text)
        if ndigits >= 4 and _IPV4_HINT.search(text):
            text = _IPV4.sub(lambda m: mark("ip", m.group(0)) if _is_ip(m.group(0)) and not _VERSION_CTX.search(
                m.string, max(0, m.start() - 24), m.start()) else m.group(0), text)
        if long_run:
            text = _PHONE.sub(lambda m: self._phones(m.group(0), mark), text)
        if "@" in text and "handle" in self.types:  # subn: no Python callback per match
            text, n = _HANDLE.subn(PLACEHOLDERS["handle"], text)
            if n:
                counts["handle"] += n
        if kept:
            text = _KEPT.sub(lambda m: kept[ord(m.group(0)) - _KEEP_BASE]
                             if ord(m.group(0)) - _KEEP_BASE < len(kept) else m.group(0), text)
        return text, counts

    def redact_fields(self, fields: dict) -> tuple[dict, Counter]:
        counts: Counter = Counter()

        def walk(v: Any) -> Any:  # str values, and str items of (nested) lists and dicts
            if isinstance(v, str):
                out, c = self.redact(v)
                if c:
                    counts.update(c)
                return out
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            return [walk(x) for x in v] if isinstance(v, (list, tuple)) else v

        return {k: walk(v) for k, v in fields.items()}, counts

    def _url(self, raw: str, mark: Callable[[str, str], str]) -> str:
        url = raw.rstrip(_URL_TRAIL)
        while url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]
        tail = raw[len(url):]
        secret, ip_host = _url_kind(url)
        if secret:
            return mark("url_token", url) + tail
        if ip_host and "ip" in self.types and ip_host in url:  # http://10.0.0.5:8080/ -> http://<IP>:8080/
            url = url.replace(ip_host, mark("ip", ip_host), 1)
        return mark("__plain__", url) + tail  # plain URLs are kept and shielded from later stages

    def _emails(self, text: str, mark: Callable[[str, str], str]) -> str:
        out, pos = [], 0
        for m in _EMAIL_AT.finditer(text):  # anchored on '@': fast; the local part is found backwards
            at = m.start()
            local = _EMAIL_LOCAL.search(text, max(pos, at - 64), at) if at > pos else None
            start = local.start() + len(local.group(0)) - len(local.group(0).lstrip(".")) if local else at
            start += start > 0 and text[start - 1] == "\\"  # raw JSON: the n of a \n escape is not the address
            if start < at:
                out += [text[pos:start], mark("email", text[start:m.end()])]
                pos = m.end()
        return "".join(out) + text[pos:] if out else text

    def _card(self, m: re.Match, mark: Callable[[str, str], str]) -> str:
        t, s, e = m.string, m.start(), m.end()
        whole_first = not (s and t[s - 1] in "0123456789-.,+")  # 7.1.1, +49: first group is not whole
        whole_last = not (e < len(t) and t[e] in "-.," and t[e + 1:e + 2].isdigit())  # 1234.56
        return _splice(m.group(0), " -", _card_ok, "card", mark, whole_first, whole_last)

    def _iban(self, m: re.Match, mark: Callable[[str, str], str]) -> str:
        if m.start() and m.string[m.start() - 1].isalnum():
            return m.group(0)
        return _splice(m.group(0), " ", _iban_ok, "iban", mark)

    def _phones(self, cand: str, mark: Callable[[str, str], str]) -> str:
        if _DATE.fullmatch(cand) or (cand.isdigit() and cand[0] != "0" and len(cand) not in (10, 11)):
            return cand  # a bare run is a phone only with a trunk 0 or at 10-11 digits (US, IN, CN mobiles)
        spans = _phone_spans(cand, 0, len(cand), self.regions)
        covered = sum(e - s for s, e in spans)
        if covered < len(cand) - 2 and " " in cand:
            # a neighbouring number glued on by a space: "+44 7494 206493 2", "+33 6 10 05 30 36 9899955881"
            for cut in (cand.rfind(" "), cand.find(" ")):
                alt = _phone_spans(cand, 0, cut, self.regions) + _phone_spans(cand, cut + 1, len(cand),
                                                                              self.regions)
                if sum(e - s for s, e in alt) > covered:
                    spans = alt
                    break
        out, pos = [], 0
        for s, e in sorted(spans):
            out += [cand[pos:s], mark("phone", cand[s:e])]
            pos = e
        return "".join(out) + cand[pos:]
