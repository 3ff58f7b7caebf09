"""The workers' encoder gives transformers' ids, and the pool map stays ordered and bounded."""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from components.shards.encode import (TOKEN_LIST, Encoder, InlineExecutor, encode_pairs, id_lists, init_worker,
                                     ordered_map)

TEXTS = ["", "Customer: order 123456 is late.\nAgent: sorry!", "  spaces  and\ttabs ", "naïve café — ünïcödé",
         "<pad> </s> <unk> look like specials", " ".join(["refund"] * 400)]


def hf_ids(tokenizer_dir: str, texts: list[str], max_length: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)(texts, truncation=True, max_length=max_length)["input_ids"]


def test_encoder_equals_transformers_with_truncation(trained_tokenizer_dir):
    for max_length in (8, 192):
        want = hf_ids(trained_tokenizer_dir, TEXTS, max_length)
        assert Encoder(trained_tokenizer_dir).encode(TEXTS, max_length).to_pylist() == want
        # The fallback for tokenizers without tokenizer.json is transformers itself.
        assert Encoder(trained_tokenizer_dir, prefer_backend=False).encode(TEXTS, max_length).to_pylist() == want
    assert max(len(x) for x in want) == 192 and all(x[-1] == 1 for x in want)  # truncated rows keep </s>


def test_encoder_equals_transformers_for_the_real_t5_tokenizer(t5_tokenizer_path):
    texts = TEXTS + ["Summarize: #Person1#: Hi, Mr. Smith. I'm Doctor Hawkins. Why are you here today?"]
    assert Encoder(t5_tokenizer_path).encode(texts, 16).to_pylist() == hf_ids(str(t5_tokenizer_path), texts, 16)


def test_encode_pairs_uses_each_length_limit(trained_tokenizer_dir):
    init_worker(trained_tokenizer_dir, single_thread=False)
    src, tgt = encode_pairs(pa.array(TEXTS), pa.array(TEXTS), 12, 5)
    assert src.type == tgt.type == pa.list_(pa.int32())
    assert max(len(x) for x in src.to_pylist()) == 12 and max(len(x) for x in tgt.to_pylist()) == 5


def test_ordered_map_keeps_order_and_pulls_at_most_a_window_ahead():
    pulled = []

    def jobs():
        for i in range(60):
            pulled.append(i)
            yield i, (i,)

    def slow_square(i: int) -> int:
        time.sleep(random.random() / 200)  # results finish out of order
        return i * i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for context, result in ordered_map(pool, slow_square, jobs(), window=5):
            out.append((context, result))
            assert len(pulled) <= len(out) - 1 + 5  # the one just consumed was within the window of 5
    assert out == [(i, i * i) for i in range(60)]
    assert list(ordered_map(InlineExecutor(), slow_square, iter([]), window=3)) == []


def test_id_lists_equal_pyarrow_conversion():
    for ids in ([[5, 6, 1], [], [7, 1]], [], [[1]], [[2**31 - 1, 0]]):
        got = id_lists(ids)
        assert got.type == TOKEN_LIST and got.equals(pa.array(ids, type=TOKEN_LIST)), ids
