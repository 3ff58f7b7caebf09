"""PII redaction benchmark: recall on seeded PII, false redactions on clean text, MB/s, real PII counts.

    python benchmarks/pii_recall.py [--n 2000] [--seed 0]

Seeded values of every type, in several real-world formats, are inserted into real support-chat turns
(TweetSumm, @mentions stripped) or, without ../shared, into generated sentences. A seeded value counts
as recalled only when the redacted text equals the redaction of the same sentence with the right
placeholder written in its place: the value is fully gone, typed correctly, and nothing around it moved.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import re
import string
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from components.common.config import PiiConfig  # noqa: E402
from components.ingest import pii  # noqa: E402
from components.ingest.pii import PLACEHOLDERS, Redactor  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
TWEETSUMM = SHARED / "tweetsumm" / "tweetsumm_train.jsonl"
SAMSUM = SHARED / "samsum" / "train.json"
IBM = SHARED / "ibm_customer_care" / "dev.json"
TYPES = list(PLACEHOLDERS)

# ---------- generators (each returns one value; formats are cycled by the caller's rng) ----------
_FIRST = ["john", "maria", "li", "aisha", "pierre", "anna", "raj", "sven", "chloe", "omar", "yuki", "dave"]
_LAST = ["doe", "garcia", "wang", "khan", "martin", "schmidt", "patel", "berg", "nguyen", "smith"]
_DOMAINS = ["gmail.com", "yahoo.co.uk", "mail.support.example.com", "outlook.de", "company.io",
            "uni-heidelberg.de", "example.org", "proton.me"]


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def gen_email(rng: random.Random) -> str:
    f, l, d = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
    return rng.choice([f"{f}.{l}@{d}", f"{f}.{l}+{rng.choice(['shop', 'news', 'x1'])}@{d}",
                       f"{f}_{l}{rng.randint(1, 99)}@{d}", f"{f[0]}.{l}@{rng.choice(['eu', 'us'])}.{d}",
                       f"{f.upper()}.{l.capitalize()}@{d.upper()}", f"{l}-{f}{rng.randint(1970, 2005)}@{d}"])


def _phone_candidates(rng: random.Random) -> list[str]:
    area = rng.choice(["212", "213", "312", "415", "617", "646", "202", "303", "404", "512", "206", "305"])
    ex, line = str(rng.randint(200, 999)), _digits(rng, 4)
    return [f"({area}) {ex}-{line}", f"({area}) 555-01{_digits(rng, 2)}", f"555-{ex}-{line}",
            f"+1-{area}-{ex}-{line}", f"{area}.{ex}.{line}",
            f"+44 20 7{_digits(rng, 3)} {_digits(rng, 4)}", f"+44 7{rng.randint(400, 999)} {_digits(rng, 6)}",
            f"07{rng.randint(400, 999)} {_digits(rng, 6)}", f"+49 30 {_digits(rng, rng.choice([6, 7, 8]))}",
            f"+49 151 {_digits(rng, 8)}", f"+91 {rng.randint(6, 9)}{_digits(rng, 4)} {_digits(rng, 5)}",
            f"+33 6 {' '.join(_digits(rng, 2) for _ in range(4))}",
            f"01 {' '.join(_digits(rng, 2) for _ in range(4))}"]


def gen_phone(rng: random.Random) -> str:
    import phonenumbers  # ground truth: regenerate a random format until it is a real-shaped number

    for _ in range(50):
        v = rng.choice(_phone_candidates(rng))
        if v.startswith("555-") or v.startswith("(") and "555-01" in v:
            return v  # fictional NANP numbers: the redactor must catch these by shape
        region = "FR" if v.startswith("01 ") else "GB" if v.startswith("07") else "US"
        if phonenumbers.is_valid_number(phonenumbers.parse(v, region)):
            return v
    return v


def _luhn_complete(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):  # the check digit will sit to the right of payload
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return payload + str((10 - total % 10) % 10)


_BRANDS = [("4", 16, (4, 4, 4, 4)), ("4", 13, (4, 4, 5)), ("51", 16, (4, 4, 4, 4)), ("55", 16, (4, 4, 4, 4)),
           ("2221", 16, (4, 4, 4, 4)), ("2720", 16, (4, 4, 4, 4)), ("34", 15, (4, 6, 5)), ("37", 15, (4, 6, 5)),
           ("6011", 16, (4, 4, 4, 4)), ("3530", 16, (4, 4, 4, 4)), ("36", 14, (4, 6, 4)),
           ("62", 19, (4, 4, 4, 4, 3))]


def gen_card(rng: random.Random) -> str:
    prefix, length, groups = rng.choice(_BRANDS)
    num = _luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
    sep = rng.choice(["", " ", "-"])
    parts, i = [], 0
    for g in groups:
        parts.append(num[i:i + g])
        i += g
    return sep.join(parts)


# BBAN layouts: n = digit, a = upper-case letter, c = letter or digit.
_IBAN_FORMATS = {"DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "ES": "20n", "NL": "4a10n", "IT": "1a10n12c",
                 "CH": "5n12c", "PL": "24n", "AT": "16n", "BE": "12n", "IE": "4a14n", "NO": "11n"}


def _iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    as_int = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{98 - as_int % 97:02d}"


def gen_iban(rng: random.Random) -> str:
    country = rng.choice(list(_IBAN_FORMATS))
    bban = ""
    for count, kind in re.findall(r"(\d+)([nac])", _IBAN_FORMATS[country]):
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}[kind]
        bban += "".join(rng.choice(pool) for _ in range(int(count)))
    compact = country + _iban_check(country, bban) + bban
    return compact if rng.random() < 0.5 else " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def gen_ip(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == 1:
        return str(ipaddress.IPv4Address(rng.randint(0x01000000, 0xDFFFFFFF)))
    v6 = ipaddress.IPv6Address(rng.getrandbits(128))
    if kind == 2:
        return v6.exploded
    if kind == 3:
        return f"2001:db8::{rng.randint(1, 0xffff):x}:{rng.randint(1, 0xffff):x}"
    v4 = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return rng.choice([f"fe80::{rng.randint(1, 0xffff):x}:{rng.randint(1, 0xffff):x}", f"::ffff:{v4}"])


def gen_url_token(rng: random.Random) -> str:
    d = rng.choice(["example.com", "shop.example.co.uk", "app.acme.io", "my.bank-portal.com"])
    tok, hexs = _alnum(rng, rng.randint(20, 40)), _alnum(rng, 64, "0123456789abcdef")
    return rng.choice([
        f"https://{d}/reset-password?token={tok}", f"https://api.{d}/v2/orders?api_key={tok}&limit=10",
        f"https://{rng.choice(_FIRST)}:{_alnum(rng, 10)}@{d}/admin", f"https://{d}/share/{tok}",
        f"https://storage.{d}/files/report.pdf?X-Amz-Expires=3600&X-Amz-Signature={hexs}",
        f"https://{d}/oauth/callback?code={_alnum(rng, 20)}&state=xyz", f"http://{d}/login?session={tok}",
        f"https://{d}/cb#access_token={tok}&token_type=bearer", f"https://{d}/download?file=a.zip&sig={hexs[:32]}",
        f"https://{d}/account?password={_alnum(rng, 12)}"])


def gen_handle(rng: random.Random) -> str:
    f, l = rng.choice(_FIRST), rng.choice(_LAST)
    name = rng.choice([f"{f.capitalize()}{l.capitalize()}", f"{f}_{l}{rng.randint(1, 99)}",
                       f"{rng.choice(['Apple', 'Amazon', 'Delta', 'Acme'])}{rng.choice(['Support', 'Help', 'Care'])}",
                       f"_{f}{rng.randint(1990, 2010)}", f"{f.upper()}{l[:3]}", f"{f}{l}"])
    return "@" + name[:15]


GENERATORS = {"email": gen_email, "phone": gen_phone, "card": gen_card, "iban": gen_iban, "ip": gen_ip,
              "url_token": gen_url_token, "handle": gen_handle}
INTROS = {"email": ["my email is", "email me at", "contact:", "reach me on", ""],
          "phone": ["call me at", "my number is", "phone:", "tel", ""],
          "card": ["my card number is", "card:", "it was charged to", ""],
          "iban": ["my IBAN is", "transfer to", "account:", ""],
          "ip": ["my IP is", "the server at", "blocked from", ""],
          "url_token": ["open", "use this link:", "I clicked", ""],
          "handle": ["cc", "thanks", "ask", ""]}

# ---------- host sentences ----------
_GENERATED = [  # ordinary support chat, with the look-alikes that must survive redaction
    "Hi, my order #A12345 hasn't arrived yet and it was due on 2024-03-05.",
    "The total was $49.99 but I was charged twice at 10:30 this morning.",
    "I'm on version 1.2.3 of the app and it keeps crashing on start.",
    "You can find the steps at https://example.com/help if that helps.",
    "Could you check ticket 4521 for me please?", "We shipped 3 items and 2 of them are delivered.",
    "Our team replies within 24 hours, Mon-Fri 9:00-17:00.", "Flight BA 283 was delayed by 45 minutes.",
    "Please restart the router and wait 30 seconds before trying again.",
    "It costs £12.50 per month, or 120 a year.", "Build 10.0.19041 still shows the error at 23:59:59.",
    "Thanks so much for your help today!", "Sorry to hear that, let's get this sorted for you.",
    "I updated to iOS 11.1.2 yesterday and now the battery drains fast.",
    "The package weighs 2.5 kg and measures 30x20x10 cm.", "Room 1204, floor 12, arriving 12/03/2024.",
]


def host_sentences(rng: random.Random, use_shared: bool = True, limit: int = 5000) -> tuple[list[str], str]:
    if use_shared and TWEETSUMM.exists():
        turns = []
        for line in TWEETSUMM.read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line)["dialogue"].split("\n"):
                text = turn.split("\t", 2)[-1]
                text = " ".join(re.sub(r"(?<!\w)@\w+", " ", text).split())  # mentions are real handles
                if len(text.split()) >= 5:
                    turns.append(text)
        rng.shuffle(turns)
        return turns[:limit], f"TweetSumm turns ({TWEETSUMM})"
    out = [" ".join(rng.sample(_GENERATED, rng.choice([1, 2]))) for _ in range(limit)]
    return out, "generated sentences (../shared absent or not used)"


def _embed(rng: random.Random, host: str, kind: str, value: str) -> tuple[str, str]:
    """(seeded sentence, the same sentence with the placeholder in the value's place)."""
    words = host.split(" ")
    at = rng.randint(0, len(words))
    intro = rng.choice(INTROS[kind])
    tail = rng.choice(["", "", ".", ",", "!", "?"])
    wrap = ("(", ")") if rng.random() < 0.1 else ("", "")

    def put(v: str) -> str:
        phrase = " ".join(x for x in [intro, wrap[0] + v + wrap[1] + tail] if x)
        return " ".join(words[:at] + [phrase] + words[at:])

    return put(value), put(PLACEHOLDERS[kind])


def run_recall(n: int = 2000, seed: int = 0, use_shared: bool = True, cfg: PiiConfig | None = None) -> dict:
    """Seed n values (split evenly over the types), redact, and score. Returns per-type and overall recall,
    false redactions on the clean host sentences, and a few failures to read."""
    rng = random.Random(seed)
    redactor = Redactor(cfg or PiiConfig())
    hosts, source = host_sentences(rng, use_shared)
    hits, totals, failures = Counter(), Counter(), []
    per_type = max(1, n // len(TYPES))
    for kind in TYPES:
        for i in range(per_type):
            host = hosts[(i * 7 + TYPES.index(kind)) % len(hosts)]
            value = GENERATORS[kind](rng)
            seeded, expected = _embed(rng, host, kind, value)
            got, counts = redactor.redact(seeded)
            want, want_counts = redactor.redact(expected)
            want_counts[kind] += 1
            ok = got == want and value not in got and counts == want_counts
            totals[kind] += 1
            hits[kind] += ok
            if not ok and sum(f[0] == kind for f in failures) < 5:
                failures.append((kind, value, seeded, got))
    clean_fp, fp_examples = Counter(), []
    for host in hosts[:max(per_type * len(TYPES), 200)]:
        red, counts = redactor.redact(host)
        clean_fp.update(counts)
        if counts and len(fp_examples) < 8:
            fp_examples.append((host, red))
    return {"source": source, "hits": hits, "totals": totals,
            "recall": {k: hits[k] / totals[k] for k in totals},
            "overall": sum(hits.values()) / max(1, sum(totals.values())),
            "clean_sentences": min(len(hosts), max(per_type * len(TYPES), 200)),
            "clean_fp": clean_fp, "fp_examples": fp_examples, "failures": failures}


def throughput(redactor: Redactor) -> None:
    for name, path in [("SAMSum train dialogues", SAMSUM), ("TweetSumm train dialogues", TWEETSUMM)]:
        if not path.exists():
            print(f"{name}: {path} absent, skipped")
            continue
        if path.suffix == ".json":
            texts = [r["dialogue"] for r in json.loads(path.read_text(encoding="utf-8")) if r.get("dialogue")]
        else:
            texts = [json.loads(x)["dialogue"] for x in path.read_text(encoding="utf-8").splitlines() if x]
        size = sum(len(t.encode("utf-8")) for t in texts)
        pii._phone_spans.cache_clear()  # cold cache: earlier sections saw some of the same phone candidates
        found, t0 = Counter(), time.perf_counter()
        for t in texts:
            found.update(redactor.redact(t)[1])
        dt = time.perf_counter() - t0
        print(f"{name}: {len(texts)} texts, {size / 1e6:.2f} MB in {dt:.2f} s = {size / 1e6 / dt:.1f} MB/s "
              f"(one core); found {dict(found)}")


def ibm_report(redactor: Redactor, examples: int = 10) -> None:
    if not IBM.exists():
        print(f"IBM customer care: {IBM} absent, skipped")
        return
    msgs = [m["message"] for conv in json.loads(IBM.read_text(encoding="utf-8"))
            for m in conv.get("dialogContent", []) if isinstance(m.get("message"), str)]
    total, by_type = Counter(), {}
    for m in msgs:
        red, counts = redactor.redact(m)
        total.update(counts)
        for k in counts:
            by_type.setdefault(k, []).append((m, red))
    print(f"IBM customer care dev.json: {len(msgs)} messages; redactions per type: {dict(total)}")
    picked: list[tuple[str, str]] = []
    for k in sorted(by_type, key=lambda k: len(by_type[k])):  # rarest types first, each message once
        picked += [p for p in by_type[k][:3] if p not in picked][:max(1, examples // len(by_type))]
    picked += [p for v in by_type.values() for p in v if p not in picked]
    for orig, red in picked[:examples]:  # tweets: short enough to show whole
        print(f"  - {' '.join(orig.split())[:300]}\n    => {' '.join(red.split())[:300]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="seeded values in all (split evenly over types)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generated", action="store_true", help="generated host sentences even when ../shared exists")
    args = ap.parse_args()
    print(f"command: python benchmarks/pii_recall.py --n {args.n} --seed {args.seed}"
          + (" --generated" if args.generated else ""))
    t0 = time.perf_counter()
    res = run_recall(args.n, args.seed, use_shared=not args.generated)
    print(f"host text: {res['source']}; {time.perf_counter() - t0:.1f} s\n")
    print(f"| type | seeded | recalled | recall | false redactions on {res['clean_sentences']} clean sentences |")
    print("|---|---|---|---|---|")
    for k in TYPES:
        print(f"| {k} | {res['totals'][k]} | {res['hits'][k]} | {res['recall'][k]:.2%} | {res['clean_fp'][k]} |")
    print(f"| overall | {sum(res['totals'].values())} | {sum(res['hits'].values())} | {res['overall']:.2%} "
          f"| {sum(res['clean_fp'].values())} |\n")
    for kind, value, _, got in res["failures"][:10]:
        print(f"missed {kind}: {value!r} -> {got[:160]!r}")
    if res["fp_examples"]:
        print("redactions on the clean host sentences (real support chats do carry phone numbers):")
    for host, red in res["fp_examples"]:
        print(f"  - {host[:140]!r}\n    => {red[:140]!r}")
    redactor = Redactor(PiiConfig())
    print()
    throughput(redactor)
    print()
    ibm_report(redactor)


if __name__ == "__main__":
    main()
