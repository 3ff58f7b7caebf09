"""Model FLOPs match what PyTorch's FlopCounterMode counts, and a packed batch prices its examples as if alone."""
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from components.train import flops
from components.train.batches import collate, collate_causal
from components.train.packing import pack

PAD, EOS = 0, 1


def _t5(attn: str):
    from transformers import T5Config, T5ForConditionalGeneration

    # Gated FFN, untied head and unequal depths: each is priced from the model as built.
    cfg = T5Config(vocab_size=300, d_model=64, d_ff=96, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=3,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=PAD)
    torch.manual_seed(0)
    return T5ForConditionalGeneration._from_config(cfg, attn_implementation=attn)


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_seq2seq_flops_equal_flop_counter_forward_and_training(attn):
    model = _t5(attn)
    rows = [([5] * 17, [7] * 9), ([6] * 17, [8] * 9)]  # equal lengths: no padding to count
    batch = collate(rows, PAD)
    fm = flops.flop_model(model)
    moments = flops.batch_moments(batch, packed=False, causal=False)
    assert _counted(lambda: model(**batch)) == fm.forward(moments)
    assert _counted(lambda: model(**batch).loss.backward()) == fm.train(moments)


def test_decoder_only_flops_equal_flop_counter():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4)
    # eager: FlopCounterMode does not count CPU's fused causal attention kernel
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager")
    batch = collate_causal([([5] * 12, [6] * 8 + [EOS]), ([7] * 15, [8] * 5 + [EOS])], PAD, EOS)
    fm = flops.flop_model(model)
    assert fm.source_weights == 0 and fm.cross_attention == 0
    assert _counted(lambda: model(**batch)) == fm.forward(flops.batch_moments(batch, packed=False, causal=True))


def test_padding_costs_nothing_and_packed_rows_price_each_example_alone():
    rng = random.Random(0)
    examples = [([rng.randrange(2, 99) for _ in range(rng.randint(3, 40))] + [EOS],
                 [rng.randrange(2, 99) for _ in range(rng.randint(1, 12))] + [EOS]) for _ in range(9)]
    alone = sum((flops.Moments.of(torch.tensor([len(s)]), torch.tensor([len(t)])) for s, t in examples),
                flops.Moments())
    padded = flops.batch_moments(collate(examples, PAD), packed=False, causal=False)
    # rows of unequal counts, so some segment slots of the shorter rows are empty
    packed = flops.batch_moments(pack(examples, [[0, 3, 5, 8], [1], [2, 4], [6, 7]], PAD, PAD),
                                 packed=True, causal=False)
    assert padded == alone == packed
    assert alone.src_tgt == sum(len(s) * len(t) for s, t in examples)  # pairs line up by example


def test_peak_lookup_by_gpu_name():
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert flops.peak_tflops("NVIDIA H200") == 989.4
    assert flops.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert flops.peak_tflops("NVIDIA L40S") == 362.1 and flops.peak_tflops("NVIDIA L4") == 121.0
    assert flops.peak_tflops("NVIDIA L40") == 181.0
    assert flops.peak_tflops("Some Future GPU") is None
    cpu = torch.device("cpu")
    assert flops.device_peak_tflops(cpu, "bf16", None) is None  # no standard CPU peak
    assert flops.device_peak_tflops(cpu, "fp32", 1.5) == 1.5  # a configured peak always wins
