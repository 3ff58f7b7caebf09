"""Batched generation: same outputs as one at a time, in input order, and the dtype it runs in."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.common import generation
from components.common.generation import GenerationSettings, generate, generation_dtype

TOKENIZER = Path(__file__).resolve().parents[3].parent / "shared" / "models" / "t5-tokenizer"


@pytest.fixture(scope="module")
def tiny():
    """A seeded random T5 small enough to generate in milliseconds; its outputs differ by input."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    if not TOKENIZER.exists():
        pytest.skip(f"{TOKENIZER} is absent (the real T5 tokenizer lives in ../shared)")
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                      num_decoder_layers=2, decoder_start_token_id=tok.pad_token_id,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config), tok


@pytest.fixture
def texts() -> list[str]:
    from pipelines.sample_data import generate as chats

    return ["Summarize the conversation.\n\n" + "\n".join(f"{m['role'].title()}: {m['content']}" for m in c["messages"])
            for c in chats(10, seed=3)]


def test_batches_of_8_match_one_at_a_time_in_input_order(tiny, texts):
    model, tok = tiny
    alone = [generate(model, tok, [t], GenerationSettings(1, 1, 12, 192))[0] for t in texts]
    batched = generate(model, tok, texts, GenerationSettings(8, 1, 12, 192))
    assert len(set(alone)) >= 3  # outputs differ by input, so a reordering would show
    assert batched == alone
    assert generate(model, tok, texts[::-1], GenerationSettings(8, 1, 12, 192)) == alone[::-1]


def test_beam_search_batched_matches_one_at_a_time(tiny, texts):
    model, tok = tiny
    alone = [generate(model, tok, [t], GenerationSettings(1, 2, 8, 192))[0] for t in texts[:4]]
    assert generate(model, tok, texts[:4], GenerationSettings(4, 2, 8, 192)) == alone


def test_model_generates_in_the_chosen_dtype(tiny, texts):
    model, tok = tiny
    out = generate(model, tok, texts[:3], GenerationSettings(2, 1, 6, 192, dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    generate(model, tok, texts[:1], GenerationSettings(2, 1, 6, 192))  # auto on CPU: back to fp32
    assert next(model.parameters()).dtype == torch.float32


def test_dtype_is_bf16_only_on_a_bf16_capable_gpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert generation_dtype(cpu) == torch.float32
    monkeypatch.setattr(generation.torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert generation_dtype(cuda) == torch.bfloat16
    assert generation_dtype(cpu) == torch.float32
    assert generation_dtype(cuda, "float32") == torch.float32  # an override wins
    assert generation_dtype(cpu, "bfloat16") == torch.bfloat16
    monkeypatch.setattr(generation.torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert generation_dtype(cuda) == torch.float32  # never fp16 by default: T5 overflows in it


def test_settings_stay_positional_and_validate_dtype():
    s = GenerationSettings(32, 1, 96, 384)
    assert s.dtype is None
    assert s.as_dict() == {"batch_size": 32, "num_beams": 1, "max_new_tokens": 96, "max_source_length": 384,
                           "dtype": "auto", "no_repeat_ngram_size": 0, "repetition_penalty": 1.0,
                           "length_penalty": 1.0, "copy_facts": False}
    # Plain search unless a control is set; beam-only arguments only with beams.
    assert s.generate_kwargs() == {"num_beams": 1, "do_sample": False}
    loop = GenerationSettings(32, 4, 96, 384, no_repeat_ngram_size=3, repetition_penalty=1.2, length_penalty=0.8)
    assert loop.generate_kwargs() == {"num_beams": 4, "do_sample": False, "early_stopping": True,
                                      "length_penalty": 0.8, "no_repeat_ngram_size": 3, "repetition_penalty": 1.2}
    assert GenerationSettings(32, 1, 96, 384, "bfloat16").as_dict()["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype 'bf16'"):
        GenerationSettings(32, 1, 96, 384, dtype="bf16")


def test_no_repeat_ngram_size_breaks_the_loops_a_random_model_makes(tiny, texts):
    """A random T5 repeats itself; with no_repeat_ngram_size=2 no token bigram appears twice in any output."""
    model, tok = tiny

    def bigram_repeats(settings: GenerationSettings) -> int:
        out = 0
        for text in generate(model, tok, texts, settings):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            grams = list(zip(ids, ids[1:]))
            out += len(grams) - len(set(grams))
        return out

    assert bigram_repeats(GenerationSettings(8, 1, 24, 192)) > 0  # the loop is there to break
    assert bigram_repeats(GenerationSettings(8, 1, 24, 192, no_repeat_ngram_size=2)) == 0
