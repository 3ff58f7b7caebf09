"""PII redaction: every type, the look-alikes that must survive, stage order, config, fields, recall."""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from components.common.config import PiiConfig
from components.ingest.pii import PLACEHOLDERS, Redactor

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(PiiConfig())


@pytest.mark.parametrize("text, expected, kind", [
    ("mail john.doe+shop@mail.support.example.co.uk today", "mail <EMAIL> today", "email"),
    ("it's Anna_B-99@uni-heidelberg.de.", "it's <EMAIL>.", "email"),
    ("call (415) 555-0132 now", "call <PHONE> now", "phone"),
    ("London: +44 20 7946 0958", "London: <PHONE>", "phone"),
    ("Berlin +49 30 123456, thanks", "Berlin <PHONE>, thanks", "phone"),
    ("Jenny 555-867-5309", "Jenny <PHONE>", "phone"),
    ("dial +1-202-555-0143.", "dial <PHONE>.", "phone"),
    ("India +91 98765 43210 or 98765 43210", "India <PHONE> or <PHONE>", "phone"),
    ("Paris 01 42 68 53 00 / mobile 0171 1234567", "Paris <PHONE> / mobile <PHONE>", "phone"),
    ("card 4111 1111 1111 1111 ok", "card <CARD> ok", "card"),
    ("mc 5500-0000-0000-0004, amex 378282246310005", "mc <CARD>, amex <CARD>", "card"),
    ("amex 3782 822463 10005 and visa13 4222222222222", "amex <CARD> and visa13 <CARD>", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN <IBAN> please", "iban"),
    ("to GB82WEST12345698765432.", "to <IBAN>.", "iban"),
    ("ip 192.168.1.10 and 8.8.8.8", "ip <IP> and <IP>", "ip"),
    ("v6 2001:db8::8a2e:370:7334, fe80::1ff:fe23:4567:890a", "v6 <IP>, <IP>", "ip"),
    ("mapped ::ffff:192.0.2.128.", "mapped <IP>.", "ip"),
    ("reset https://x.example.com/reset?token=abc123XYZ now", "reset <URL> now", "url_token"),
    ("see https://api.example.com/v1?limit=5&api_key=k3y&x=1.", "see <URL>.", "url_token"),
    ("s3 https://b.s3.amazonaws.com/f.pdf?X-Amz-Signature=deadbeef", "s3 <URL>", "url_token"),
    ("login https://bob:hunter2@intranet.example.com/admin", "login <URL>", "url_token"),
    ("share https://drive.example.com/s/aZ3kP9qLm2Xv7TnB4wQe)", "share <URL>)", "url_token"),
    ("cb https://app.example.com/cb#access_token=abc&type=bearer", "cb <URL>", "url_token"),
    ("thanks @AppleSupport and @john_doe99!", "thanks <HANDLE> and <HANDLE>!", "handle"),
    ("@135060 Let's investigate", "<HANDLE> Let's investigate", "handle"),
])
def test_each_type_is_redacted_with_its_placeholder(redactor, text, expected, kind):
    out, counts = redactor.redact(text)
    assert out == expected
    assert set(counts) == {kind} and counts[kind] == expected.count(PLACEHOLDERS[kind])


@pytest.mark.parametrize("text", [
    "Order #A12345 costs $49.99 incl. 19% VAT",
    "Delivered on 2024-03-05 at 10:30, or 12/03/2024 at 10:30:45",
    "Update to 1.2.3, build 10.0.19041, iOS 11.1.2",
    "I updated to beta (1.16.0.53) yesterday",
    "Room 1204, flight BA 283, 3 items, 42 minutes, ticket 4521",
    "ref 12345678 and tweet 1245425308704149506 and 20200401224734",
    "invalid card 4111 1111 1111 1112 and invalid iban DE89 3704 0044 0532 0130 01",
    "See https://example.com/help or https://support.example.com/articles/204233943/Basic-Troubleshooting-4",
    "Short https://t.co/m9DPQbkftD link and www.example.org/faq?page=2",
    "meet @ 5pm, or @12, smile :: and 10:30:45",
    "RIP macbook 05.10.2015-09.10.2015, Chrome 61.0.3163.100",
    "mum 56566631/58",  # 8 digits, not a valid number in the configured regions
])
def test_look_alikes_are_not_redacted(redactor, text):
    out, counts = redactor.redact(text)
    assert (out, counts) == (text, Counter())


def test_order_longer_matches_are_not_half_eaten(redactor):
    # Card and IBAN digits must not become phones; an email is not a handle; URLs own what is inside them.
    assert redactor.redact("pay 4111-1111-1111-1111 now")[0] == "pay <CARD> now"
    assert redactor.redact("NL91 ABNA 0417 1643 00 thanks")[0] == "<IBAN> thanks"
    out, counts = redactor.redact("write to help@apple.com or @AppleSupport")
    assert out == "write to <EMAIL> or <HANDLE>" and counts == Counter(email=1, handle=1)
    out, counts = redactor.redact("https://example.com/contact?email=john@x.com and https://medium.com/@jo/p")
    assert out == "<URL> and https://medium.com/@jo/p" and counts == Counter(url_token=1)
    assert redactor.redact("http://10.0.0.5:8080/status")[0] == "http://<IP>:8080/status"
    # Two numbers written next to each other stay two.
    assert redactor.redact("call +44 20 7946 0958 2 times")[0] == "call <PHONE> 2 times"
    assert redactor.redact("card 4111 1111 1111 1111 2 times")[0] == "card <CARD> 2 times"


def test_types_subset_redacts_only_those_but_still_shields_others():
    only_phone = Redactor(PiiConfig(types=["phone"]))
    text = "card 4111 1111 1111 1111, mail a.b@x.com, call (415) 555-0132, @bob"
    out, counts = only_phone.redact(text)
    assert out == "card 4111 1111 1111 1111, mail a.b@x.com, call <PHONE>, @bob"
    assert counts == Counter(phone=1)
    no_email = Redactor(PiiConfig(types=["handle"]))
    assert no_email.redact("a.b@x.com @bob")[0] == "a.b@x.com <HANDLE>"


def test_disabled_changes_nothing():
    r = Redactor(PiiConfig(enabled=False))
    text = "a.b@x.com (415) 555-0132 4111 1111 1111 1111"
    assert r.redact(text) == (text, Counter())
    assert r.redact_fields({"dialogue": text}) == ({"dialogue": text}, Counter())


def test_redact_fields_walks_strings_and_nested_lists(redactor):
    fields = {"dialogue": "A: mail me at a@b.com\nB: ok", "summary": "A shares a@b.com",
              "tokens": ["call", "555-867-5309", "@bob"], "summaries": [["x a@b.com"], "none"],
              "rating": 5, "extra": None}
    out, counts = redactor.redact_fields(fields)
    assert out == {"dialogue": "A: mail me at <EMAIL>\nB: ok", "summary": "A shares <EMAIL>",
                   "tokens": ["call", "<PHONE>", "<HANDLE>"], "summaries": [["x <EMAIL>"], "none"],
                   "rating": 5, "extra": None}
    assert counts == Counter(email=3, phone=1, handle=1)
    assert len(out["tokens"]) == len(fields["tokens"])  # NER tags stay aligned


def test_seeded_recall_on_generated_sentences():
    spec = importlib.util.spec_from_file_location("pii_recall", REPO / "benchmarks" / "pii_recall.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.run_recall(n=420, seed=3, use_shared=False)
    assert sum(res["totals"].values()) == 420
    assert res["overall"] >= 0.99, res["failures"]
    assert min(res["recall"].values()) >= 0.95, res["recall"]
    assert sum(res["clean_fp"].values()) == 0, res["fp_examples"]  # the look-alike sentences stay clean
