"""Fact-copying decoding: a number or name is copied whole from the input, or not written at all."""
from __future__ import annotations

import re

import pytest
import torch

from components.common.fact_copy import FactCopyProcessor
from components.common.generation import GenerationSettings, generate
from components.shards.tokenizer import train_unigram
from pipelines.sample_data import generate as chats

SOURCE = "Customer: Hi, this is Quentin Ito. My order 703458 cost 58.95 euros.\nAgent: Sam here, refunded."


@pytest.fixture(scope="module")
def tok():
    rows = chats(300, seed=5)
    return train_unigram([m["content"] for r in rows for m in r["messages"]] + [r["summary"] for r in rows], 800)


def allowed(tok, source: str, written: str, prefix: list[int] | None = None) -> set[str]:
    """The pieces the processor leaves open after `written` (decoder ids start with the pad token)."""
    proc = FactCopyProcessor(tok, [tok(source)["input_ids"]], num_beams=1)
    ids = [tok.pad_token_id] + (prefix if prefix is not None else tok(written, add_special_tokens=False)["input_ids"])
    scores = proc(torch.tensor([ids]), torch.zeros(1, len(tok)))
    return {tok.convert_ids_to_tokens(i) for i in range(len(tok)) if scores[0, i] > -float("inf")}


def test_a_name_or_number_must_start_as_in_the_input(tok):
    open_ = allowed(tok, SOURCE, "Refund for")
    assert "▁Quentin" in open_ and "▁Sam" in open_
    assert "▁Walter" not in open_ and "▁Oscar" not in open_  # names the chat does not have
    assert "▁the" in open_ and "▁The" in open_  # ordinary words are free
    assert "7" in open_ and "1" not in open_  # no 1 anywhere in the chat
    first = allowed(tok, SOURCE, "", [])
    assert "▁Quentin" in first  # a summary does not open with half a word ("enia Ito" for "Xenia Ito")
    assert not [p for p in first if p[0].isalpha() and not p.startswith("<")]


def test_inside_a_number_only_the_inputs_continuation_and_no_early_end(tok):
    prefix = tok("order", add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(["▁", "7", "0"])
    open_ = allowed(tok, SOURCE, "", prefix)
    assert open_ == {"3"}  # 703458 goes on; stopping at "70" or the end token is not allowed
    done = tok.convert_tokens_to_ids(["▁", "7", "0", "3", "4", "5", "8"])
    open_ = allowed(tok, SOURCE, "", tok("order", add_special_tokens=False)["input_ids"] + done)
    assert "." in open_ and "</s>" in open_ and "▁euros" in open_ and "9" not in open_
    amount = tok.convert_tokens_to_ids(["▁", "5", "8"])
    assert allowed(tok, SOURCE, "", amount) == {"."}  # 58.95, not 58 alone
    # A name the chat only writes before a full stop may still go on with a new word.
    after_name = allowed(tok, "Agent: Hello, I'm Taylor.", "", tok("Taylor", add_special_tokens=False)["input_ids"])
    assert "▁the" in after_name and "." in after_name


def test_a_random_model_writes_only_numbers_of_its_input(tok):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1,
                      num_decoder_layers=1, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # a random model that likes digits: the constraint has work to do
        for t in tok.convert_tokens_to_ids(list("0123456789")):
            model.shared.weight[t] *= 8
    texts = ["\n".join(f"{m['role']}: {m['content']}" for m in c["messages"]) for c in chats(12, seed=9)]
    free = generate(model, tok, texts, GenerationSettings(4, 1, 40, 256))
    copied = generate(model, tok, texts, GenerationSettings(4, 1, 40, 256, copy_facts=True))
    copied_beams = generate(model, tok, texts, GenerationSettings(4, 2, 40, 256, copy_facts=True))

    def foreign_numbers(outputs: list[str]) -> int:
        return sum(n not in text for out, text in zip(outputs, texts) for n in re.findall(r"\d+", out))

    assert foreign_numbers(free) > 0
    assert foreign_numbers(copied) == 0 and foreign_numbers(copied_beams) == 0


def test_a_name_spelled_from_small_pieces_is_held_like_any_other(tok):
    """A rare name has no word piece: "▁" then glued letters. Its first capital starts a fact as
    "▁Quentin" does; before this, "▁" + "D" + "1..." wrote ids and names no dialogue had (D12111, DDM)."""
    assert tok.convert_ids_to_tokens(tok("Zorblax", add_special_tokens=False)["input_ids"])[:3] == ["▁", "Z", "o"]
    prefix = tok("Refund for", add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(["▁"])
    assert "Z" not in allowed(tok, SOURCE, "", prefix) and "o" in allowed(tok, SOURCE, "", prefix)
    named = SOURCE + " Zorblax says thanks."
    assert "Z" in allowed(tok, named, "", prefix)
    assert allowed(tok, named, "", prefix + tok.convert_tokens_to_ids(["Z"])) == {"o"}  # the rest of it, whole


def test_a_number_glued_to_a_word_is_still_a_number_of_the_input(tok):
    """Digits glued to a plain word ("rein" + "111") start a number like any other: before this they
    continued the word, and a retrained model wrote ids no dialogue had."""
    prefix = tok("Refund for rein", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(prefix)[-1][0] != "▁"  # the word ends in a glued piece
    open_ = allowed(tok, SOURCE, "", prefix)
    assert "7" in open_ and "1" not in open_  # 703458 is in the chat; no 1 anywhere
    assert allowed(tok, SOURCE, "", prefix + tok.convert_tokens_to_ids(["7"])) == {"0"}  # and then whole
