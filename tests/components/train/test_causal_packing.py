"""Packed decoder-only rows give each sequence the loss (and gradient) it has alone."""
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from components.common.config import TinyModelConfig
from components.train import causal_packing as cp, flops
from components.train.model import build_tiny
from components.train.packing import fill_rows

PAD, EOS, VOCAB = 0, 1, 97
TINY = TinyModelConfig(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=1, num_decoder_layers=1)


def _sequences(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 45))]
        tgt = [rng.randrange(2, VOCAB) for _ in range(rng.randint(1, 20))]
        out.append(cp.causal_sequence(src, tgt, EOS))
    return out


def _rows(seqs, budget: int) -> list[list[int]]:
    rows, used = [], []
    for i, (s, _) in enumerate(seqs):
        for r, u in enumerate(used):
            if u + len(s) <= budget:
                rows[r].append(i)
                used[r] += len(s)
                break
        else:
            rows.append([i])
            used.append(len(s))
    return rows


def _alone(model, seq, lab) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, :-1].float()
    return F.cross_entropy(logits, torch.tensor(lab[1:]), ignore_index=-100)


def _model(kv_heads: int | None = None):
    model = build_tiny(TINY, VOCAB, PAD, EOS, seed=5, architecture="causal").eval()
    if kv_heads:  # grouped-query attention: rebuild with fewer key/value heads
        from transformers import LlamaForCausalLM

        config = model.config
        config.num_key_value_heads = kv_heads
        torch.manual_seed(5)
        model = LlamaForCausalLM(config).eval()
    return model


def test_sequence_ends_with_eos_and_loses_a_leading_bos():
    assert cp.causal_sequence([5, 6], [9, 7], eos_id=1, bos_id=9) == ([5, 6, 7, 1], [-100, -100, 7, 1])
    assert cp.causal_sequence([5], [7, 1], eos_id=1) == ([5, 7, 1], [-100, 7, 1])


def test_positions_restart_and_boundaries_are_not_predicted():
    seqs = [([5, 6, 7, 1], [-100, -100, 7, 1]), ([8, 9, 1], [-100, 9, 1])]
    batch = cp.pack_causal(seqs, [[0, 1]], PAD)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert batch.segments[0].tolist() == [1, 1, 1, 1, 2, 2, 2]
    # position t predicts labels[t + 1]; the 8 after sequence 1's </s> is never a target
    assert cp._shifted_labels(batch)[0].tolist() == [-100, 7, 1, -100, 9, 1]


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_packed_loss_equals_unpacked_loss_per_example(kv_heads):
    model = _model(kv_heads)
    seqs = _sequences(20, seed=1)
    rows = _rows(seqs, 160)
    assert max(len(r) for r in rows) >= 3
    batch = cp.pack_causal(seqs, rows, PAD)
    with torch.no_grad():
        packed = cp.causal_per_example_loss(cp.causal_forward(model, batch), batch, len(seqs))
        alone = torch.stack([_alone(model, s, lab) for s, lab in seqs])
    assert torch.allclose(packed, alone, atol=1e-5, rtol=0), (packed - alone).abs().max()


def test_packed_gradients_equal_unpacked_gradients():
    model = _model()
    seqs = _sequences(6, seed=2)
    batch = cp.pack_causal(seqs, _rows(seqs, 256), PAD)
    cp.causal_per_example_loss(cp.causal_forward(model, batch), batch, len(seqs)).sum().backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_alone(model, s, lab) for s, lab in seqs).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(packed[n], p.grad, atol=1e-5), n


def test_token_loss_is_the_mean_over_all_target_tokens():
    model = _model()
    seqs = _sequences(8, seed=3)
    batch = cp.pack_causal(seqs, _rows(seqs, 128), PAD)
    with torch.no_grad():
        logits = cp.causal_forward(model, batch)
        per = cp.causal_per_example_loss(logits, batch, len(seqs))
        at_targets = cp.causal_forward(model, batch, targets_only=True)
        dense = cp.causal_forward(model, batch, attention="dense")  # transformers' mask from position_ids
    counts = torch.tensor([sum(t != -100 for t in lab[1:]) for _, lab in seqs], dtype=torch.float32)
    expected = float((per * counts).sum() / counts.sum())
    assert at_targets.shape == (int(counts.sum()), VOCAB)
    for out in (logits, at_targets, dense):
        assert cp.causal_token_loss(out, batch).item() == pytest.approx(expected, abs=1e-5)


def _ex(key, input_ids, labels):  # an example as the loader yields it
    return SimpleNamespace(key=key, input_ids=input_ids, labels=labels)


def test_rows_fill_one_budget_and_price_each_sequence():
    rng = random.Random(4)
    stream = iter([_ex(("s", i), [5] * rng.randint(3, 40), [6] * rng.randint(1, 12)) for i in range(500)])
    size = cp.causal_length(EOS)
    rows, pending = fill_rows(lambda: next(stream), [], 4, 96, 0, size=size)
    assert all(sum(size(e)[0] for e in row) <= 96 for row in rows)
    batch = cp.pack_causal_examples(rows, PAD, EOS)
    moments = flops.batch_moments(batch, packed=True, causal=True)
    lengths = [size(e)[0] for row in rows for e in row]
    assert (moments.src, moments.tgt, moments.tgt_sq) == (0, sum(lengths), sum(n * n for n in lengths))
    with pytest.raises(ValueError, match=r"example \('s', 1\) has 102/0 tokens"):
        fill_rows(lambda: _ex(("s", 1), [5] * 100, [6]), [], 4, 96, 0, size=size)
