"""The `tiny` base's tokenizer is a pure function of the training text: the same data gives the same
vocabulary in every process (the trainer in `tokenizers` did not: ties broke in Rust hash order)."""
from __future__ import annotations

import subprocess
import sys

from components.shards.tokenizer import train_unigram
from components.train.launch import REPO_ROOT

SCRIPT = """
import hashlib
from pipelines.sample_data import generate
from components.shards.tokenizer import train_unigram
texts = ["\\n".join(f"{m['role']}: {m['content']}" for m in c["messages"]) for c in generate(200, 3)]
tok = train_unigram(iter([texts[:100], texts[100:]]), 800)
print(hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest(), len(tok))
"""


def test_same_text_same_tokenizer_in_separate_processes():
    runs = {subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()[-2] for _ in range(3)}
    assert len(runs) == 1, runs


def test_t5_layout_digits_and_round_trip():
    tok = train_unigram(["Customer: order 123456 is late.\nAgent: sorry, checking order 123456 now."] * 40, 200)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    ids = tok("order 6512 is late")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[-1] == "</s>" and {"6", "5", "1", "2"} <= set(pieces)  # digits one by one
    assert tok.decode(ids, skip_special_tokens=True) == "order 6512 is late"


def test_every_ascii_character_survives_text_that_never_had_it():
    """A later round's logs keep the first round's tokenizer: "q", "$" or "/" absent from the first
    round's chats must still round-trip, not come back as <unk> ("reuiring")."""
    tok = train_unigram(["Customer: my order 123456 is late.\nAgent: sorry, checking it now."] * 40, 200)
    text = "Quick: $58.95 & 20% off jq_x/y#1 <a@b.c> {~`|\\^*+=}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
