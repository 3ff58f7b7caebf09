"""Exact and near-duplicate detection: normalisation, MinHash signatures, deterministic kept copies."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from components.common.config import DedupConfig
from components.ingest.dedup import (dedup_text, exact_key, find_duplicates, normalise, shingle_hashes,
                                     signature, signature_bytes, signature_from_bytes)

REPO = Path(__file__).resolve().parents[3]
SAMSUM = REPO.parent / "shared" / "datasets" / "samsum" / "train.json"  # ../shared
CFG = DedupConfig()
WORDS = ("time meet lunch office train ticket movie dinner call phone late sorry weekend party book "
         "coffee rain car work home mum dog cat pizza game match exam flight hotel beach money").split()


def dialogue(seed: int, words: int = 60) -> str:
    """A made-up two-speaker dialogue of exactly `words` words (speaker names count)."""
    rnd = random.Random(seed)
    turns, left = [], words
    while left > 0:
        n = min(left, rnd.randint(5, 12))
        turns.append(" ".join([rnd.choice(["Anna:", "Ben:"])] + [rnd.choice(WORDS) for _ in range(n - 1)]))
        left -= n
    return "\n".join(turns)


def replace_word(text: str, index: int, new: str = "zebra") -> str:
    """Replace the index-th word (speaker names count), keeping the line breaks."""
    tokens = re.split(r"(\s+)", text)
    tokens[range(0, len(tokens), 2)[index]] = new
    return "".join(tokens)


def items(texts: dict[str, str], cfg: DedupConfig = CFG):
    return [(rid, exact_key({"dialogue": t}), signature(t, cfg)) for rid, t in texts.items()]


def test_normalise_case_unicode_punctuation_whitespace():
    assert normalise("  Hello,   WORLD!!\r\n How're\tyou?? ") == "hello world how re you"
    assert normalise("ﬁne Ｃａｆé_bar") == "fine café bar"  # NFKC: ligature, full-width letters
    assert normalise("...") == "" and normalise("") == ""


def test_normalise_matches_the_regex_definition():
    # The ASCII fast path and the general path must both equal the plain definition.
    def reference(text: str) -> str:
        return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).lower()).strip()
    rnd = random.Random(3)
    alphabet = "aZ9 _-.,!?\t\n\r'\"()é€😀ßİ½ﬁ—…Ω中"
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        ascii_text = text.encode("ascii", "ignore").decode()
        assert normalise(text) == reference(text)
        assert normalise(ascii_text) == reference(ascii_text)


def test_dedup_text_and_exact_key():
    fields = {"summary": "S", "dialogue": "D", "summaries": ["S", 3, "T"], "rating": "5", "n": 7}
    assert dedup_text(fields) == "D\n5\nS\nT\nS"  # dialogue, n (not text), rating, summaries, summary
    a = exact_key({"dialogue": "Anna: Hi, Ben!\nBen: Hello."})
    assert a == exact_key({"dialogue": "anna  hi ben ben: HELLO"})
    assert len(a) == 64 and a != exact_key({"dialogue": "Anna: Hi, Ben!\nBen: Hello.", "summary": "x"})


def test_exact_duplicates_differ_only_in_case_whitespace_punctuation():
    base = dialogue(1)
    texts = {"a": base, "b": base.upper().replace(" ", "  "), "c": base.replace("\n", " ... "), "d": dialogue(2)}
    assert find_duplicates(items(texts), CFG) == {"b": ("a", "exact"), "c": ("a", "exact")}


def test_one_word_changed_is_a_near_duplicate():
    base = dialogue(5)  # 60 words
    end = replace_word(base, -1)  # the last word: 1 of 56 shingles changes (Jaccard 0.96)
    long = dialogue(6, words=150)
    middle = replace_word(long, 70)  # mid-text: 5 of 146 shingles change (Jaccard 0.93)
    texts = {"x1": base, "x2": end, "y1": long, "y2": middle, "z": dialogue(7)}
    assert find_duplicates(items(texts), CFG) == {"x2": ("x1", "near"), "y2": ("y1", "near")}


def test_one_word_mid_text_of_60_words_is_below_the_default_threshold():
    # 5-word shingles: one changed word in the middle replaces 5 of 56 shingles, Jaccard 51/61 = 0.84.
    # That is under 0.85 by definition; a lower threshold catches it.
    base = dialogue(5)
    texts = {"a": base, "b": replace_word(base, 30)}
    low = DedupConfig(threshold=0.7)
    assert find_duplicates(items(texts, low), low) == {"b": ("a", "near")}


def test_unrelated_texts_are_not_merged():
    # Same vocabulary, same speakers, same length: only the word order and choice differ.
    texts = {f"r{i:03d}": dialogue(100 + i) for i in range(300)}
    texts.update({"s1": "Anna: ok", "s2": "Anna: ok then", "s3": "Ben: ok"})  # short: exact matching only
    assert find_duplicates(items(texts), CFG) == {}


def test_short_texts_use_the_whole_text_as_one_shingle():
    assert len(shingle_hashes("Anna: see you", CFG.shingle_words)) == 1
    texts = {"a": "Anna: see you!", "b": "anna see   you", "c": "Anna: see ya"}
    near_only = DedupConfig(exact=False)
    assert find_duplicates(items(texts, near_only), near_only) == {"b": ("a", "near")}


def test_kept_copy_is_the_smallest_id_whatever_the_input_order():
    base, other = dialogue(11, 80), dialogue(12, 80)
    texts = {"src2:007": base, "src1:900": base.upper(), "src1:100": replace_word(base, -1),
             "src3:001": replace_word(base, -2, "lion"), "src2:500": other, "src1:300": other + "!"}
    expected = {"src1:900": ("src1:100", "near"), "src2:007": ("src1:100", "near"),
                "src3:001": ("src1:100", "near"), "src2:500": ("src1:300", "exact")}
    rows = items(texts)
    for seed in range(10):
        random.Random(seed).shuffle(rows)
        assert find_duplicates(iter(rows), CFG) == expected


def test_near_duplicate_maps_to_the_smallest_matching_kept_id():
    # b and c are both kept (not near each other); d is near both and maps to the smaller one.
    a = dialogue(20, 100)
    left, right = replace_word(a, 0, "x1"), replace_word(a, -1, "x2")
    texts = {"b": dialogue(21, 100) + " " + left, "c": dialogue(22, 100) + " " + right, "d": a}
    dups = find_duplicates(items(texts, DedupConfig(threshold=0.4)), DedupConfig(threshold=0.4))
    assert dups == {"d": ("b", "near")}


def test_exact_and_near_switches():
    base = dialogue(30)
    texts = {"a": base, "b": base.lower(), "c": replace_word(base, -1)}
    assert find_duplicates(items(texts), CFG) == {"b": ("a", "exact"), "c": ("a", "near")}
    near_only = DedupConfig(exact=False)
    assert find_duplicates(items(texts, near_only), near_only) == {"b": ("a", "near"), "c": ("a", "near")}
    exact_only = DedupConfig(near=False)
    assert signature(base, exact_only) is None
    assert find_duplicates(items(texts, exact_only), exact_only) == {"b": ("a", "exact")}
    neither = DedupConfig(exact=False, near=False)
    assert find_duplicates(items(texts, neither), neither) == {}


def test_duplicate_record_ids_are_an_error():
    with pytest.raises(ValueError, match="more than once"):
        find_duplicates(items({"a": "x"}) * 2, CFG)


def test_signature_round_trips_through_bytes():
    sig = signature(dialogue(40), CFG)
    assert sig.dtype == np.uint64 and sig.shape == (CFG.num_perm,)
    raw = signature_bytes(sig)
    assert isinstance(raw, bytes) and len(raw) == 8 * CFG.num_perm
    back = signature_from_bytes(raw, CFG)
    assert back.dtype == np.uint64 and np.array_equal(back, sig)
    with pytest.raises(ValueError, match="num_perm"):
        signature_from_bytes(raw, DedupConfig(num_perm=128))


@pytest.mark.parametrize("cfg", [CFG, DedupConfig(num_perm=128, shingle_words=3), DedupConfig(shingle_words=1)])
@pytest.mark.parametrize("text", [dialogue(50), "Anna: hi", "", "Ünïcode — tëxt, with ﬁ and 中文 words too"])
def test_signature_equals_datasketch_for_the_same_shingle_hashes(cfg, text):
    hashes = shingle_hashes(text, cfg.shingle_words)
    m = MinHash(num_perm=cfg.num_perm, seed=1, scheme="affine64", hashfunc=int)
    m.update_batch(hashes)
    assert np.array_equal(signature(text, cfg), m.hashvalues)


def test_signature_is_deterministic_across_processes():
    text = dialogue(60) + "\nAnna: café ﬁne 😀"
    code = ("import sys; from components.common.config import DedupConfig; "
            "from components.ingest.dedup import signature, signature_bytes; "
            "print(signature_bytes(signature(sys.argv[1], DedupConfig())).hex())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash salt than this process
    out = subprocess.run([sys.executable, "-c", code, text], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == signature_bytes(signature(text, CFG)).hex()


def test_samsum_train_has_few_duplicates():
    if not SAMSUM.exists():
        pytest.skip(f"{SAMSUM} is absent (real SAMSum lives in ../shared/datasets)")
    rows = json.loads(SAMSUM.read_text(encoding="utf-8"))
    records = {f"samsum:{r['id']}": {"dialogue": r["dialogue"], "summary": r["summary"]} for r in rows}
    start = time.perf_counter()
    sigs = {rid: signature(dedup_text(f), CFG) for rid, f in records.items()}
    sig_s = time.perf_counter() - start
    found = [(rid, exact_key(f), sigs[rid]) for rid, f in records.items()]
    start = time.perf_counter()
    dups = find_duplicates(found, CFG)
    find_s = time.perf_counter() - start
    kinds = [kind for _, kind in dups.values()]
    print(f"\nsamsum train: {len(records)} records, signature {len(records) / sig_s:.0f} records/s, "
          f"find_duplicates {find_s:.2f}s, exact {kinds.count('exact')}, near {kinds.count('near')}")
    # SAMSum repeats ~490 dialogues with different summaries; whole records rarely repeat.
    assert kinds.count("exact") == 1
    assert 20 <= kinds.count("near") <= 80
    for dup, (kept, _) in dups.items():  # every near duplicate passed the Jaccard confirmation
        assert np.mean(sigs[dup] == sigs[kept]) >= CFG.threshold
    assert find_duplicates(reversed(found), CFG) == dups
