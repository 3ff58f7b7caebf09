"""Decoder-only causal LMs through the same pipeline: collator, tiny model, train step, generation."""
from __future__ import annotations

import pytest
import torch

from components.common.config import LoraConfig, TinyModelConfig
from components.common.hf import load_model, load_tokenizer
from components.common.storage import join
from components.common.generation import GenerationSettings, generate
from components.train import lora as lora_lib, model as model_lib
from components.train.core import run_train
from components.train.batches import collate_causal

TINY = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)


def test_collate_masks_the_prompt_and_ends_targets_with_eos():
    # row 2's target starts with a BOS (9) and lacks </s> (1), as decoder tokenizers often give it
    batch = collate_causal([([5, 6, 1], [7, 1]), ([5, 1], [9, 8, 4])], pad_id=0, eos_id=1, bos_id=9)
    assert batch["input_ids"].tolist() == [[5, 6, 1, 7, 1], [5, 1, 8, 4, 1]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 7, 1], [-100, -100, 8, 4, 1]]
    assert batch["attention_mask"].tolist() == [[1] * 5, [1] * 5]
    short = collate_causal([([5], [7]), ([5, 6, 6, 6], [7])], pad_id=0, eos_id=1)
    assert short["input_ids"].tolist() == [[5, 7, 1, 0, 0, 0], [5, 6, 6, 6, 7, 1]]
    assert short["labels"].tolist() == [[-100, 7, 1, -100, -100, -100], [-100] * 4 + [7, 1]]


def test_padded_batch_loss_equals_the_loss_of_each_row_alone():
    """Right padding is masked out: the batch's loss is the token-mean of the rows' own losses."""
    model = model_lib.build_tiny(TINY, vocab_size=50, pad_id=0, eos_id=1, seed=0, architecture="causal").eval()
    rows = [([5, 6, 7, 8, 1], [9, 10, 1]), ([5, 1], [11, 12, 13, 14, 1]), ([20, 21, 22], [23, 1])]
    with torch.no_grad():
        batch_loss = model(**collate_causal(rows, 0, 1)).loss
        sums = []
        for row in rows:
            single = collate_causal([row], 0, 1)
            n = int((single["labels"][:, 1:] != -100).sum())  # the model predicts each label from its left
            sums.append((model(**single).loss * n, n))
    expected = sum(s for s, _ in sums) / sum(n for _, n in sums)
    assert batch_loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_tiny_decoder_is_seeded_llama_shaped():
    a = model_lib.build_tiny(TINY, vocab_size=321, pad_id=0, eos_id=1, seed=3, architecture="causal")
    b = model_lib.build_tiny(TINY, vocab_size=321, pad_id=0, eos_id=1, seed=3, architecture="causal")
    assert a.config.model_type == "llama" and not a.config.is_encoder_decoder
    assert a.config.vocab_size == 321 and a.config.num_hidden_layers == 2 and a.config.tie_word_embeddings
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))
    assert model_lib.resolve_architecture("auto", "tiny") == "seq2seq"


def test_lora_defaults_to_the_decoders_attention_projections():
    model = model_lib.build_tiny(TINY, vocab_size=50, pad_id=0, eos_id=1, seed=0, architecture="causal")
    wrapped = lora_lib.apply_lora(model, LoraConfig(enabled=True, r=4, alpha=8))
    assert sorted(wrapped.peft_config["default"].target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert wrapped.peft_config["default"].task_type == "CAUSAL_LM"
    seq2seq = lora_lib.apply_lora(model_lib.build_tiny(TINY, 50, 0, 1, 0), LoraConfig(enabled=True, r=4, alpha=8))
    assert sorted(seq2seq.peft_config["default"].target_modules) == ["k", "o", "q", "v"]


@pytest.mark.parametrize("packing", [False, True])
def test_causal_train_step_and_generation(tiny_config, store, shards_uri, packing):
    cfg = tiny_config.model_copy(update={
        "model": tiny_config.model.model_copy(update={"architecture": "causal"}),
        "train": tiny_config.train.model_copy(update={"max_steps": 24, "log_every": 4, "learning_rate": 3e-3,
                                                      "packing": packing})})
    result = run_train(cfg, shards_uri, join(store.root, "runs", f"c{int(packing)}"), f"p{int(packing)}")
    assert result.final_loss < result.first_loss, (result.first_loss, result.final_loss)
    model, tokenizer = load_model(result.model_uri, store), load_tokenizer(result.model_uri, store)
    assert model.config.model_type == "llama"
    base = load_model(result.base_model_uri, store)
    assert not all((p == q).all() for p, q in zip(model.parameters(), base.parameters()))
    texts = ["Summarize the conversation:\nCustomer: my parcel is late.", "Summarize: refund please", "Hi"]
    settings = GenerationSettings(batch_size=2, num_beams=1, max_new_tokens=6, max_source_length=64)
    outputs = generate(model, tokenizer, texts, settings)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
    # Only the continuation comes back: at most max_new_tokens of it, never the prompt.
    assert all(len(tokenizer(o, add_special_tokens=False)["input_ids"]) <= 6 + 1 for o in outputs)
    assert not any(o.startswith("Summarize") for o in outputs)
    # Each prompt alone gives the same continuation as in its left-padded batch.
    assert [generate(model, tokenizer, [t], settings)[0] for t in texts] == outputs
