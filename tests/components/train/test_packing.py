"""Packed encoder-decoder batches give each example the loss (and gradient) it has alone."""
import random

import pytest
import torch
import torch.nn.functional as F

from components.common.config import TinyModelConfig
from components.train.model import build_tiny
from components.train.packing import (attention_masks, fill_rows, pack, pack_examples, packed_forward,
                                      per_example_loss, plan_rows, to_device, token_loss)

PAD, EOS, VOCAB = 0, 1, 97


def _examples(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 40))] + [EOS]
        tgt = [rng.randrange(2, VOCAB) for _ in range(rng.randint(2, 16))] + [EOS]
        out.append((src, tgt))
    return out


@pytest.fixture(scope="module")
def model():
    tiny = TinyModelConfig(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2)
    m = build_tiny(tiny, VOCAB, PAD, EOS, seed=3).eval()
    m.config.dropout_rate = 0.0
    return m


def _alone(model, src, tgt) -> torch.Tensor:
    out = model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt]), use_cache=False)
    return F.cross_entropy(out.logits[0].float(), torch.tensor(tgt))


def test_rows_respect_both_budgets_and_hold_every_example_once():
    ex = _examples(50, seed=1)
    rows = plan_rows([(len(s), len(t)) for s, t in ex], 96, 40)
    assert sorted(i for r in rows for i in r) == list(range(50))
    for r in rows:
        assert sum(len(ex[i][0]) for i in r) <= 96 and sum(len(ex[i][1]) for i in r) <= 40
    assert len(rows) < 50 / 2  # packing actually packs
    with pytest.raises(ValueError, match="over the row budget"):
        plan_rows([(200, 5)], 96, 40)


def test_masks_keep_examples_apart():
    ex = [([5, 6, EOS], [7, EOS]), ([8, EOS], [9, 10, EOS])]
    batch = pack(ex, [[0, 1]], PAD, PAD)
    enc, dec, cross = (m[0, 0] == 0 for m in attention_masks(batch))
    assert batch.decoder_input_ids[0].tolist() == [PAD, 7, PAD, 9, 10]  # shifted inside each example
    assert enc[:3, :3].all() and not enc[:3, 3:].any() and not enc[3:, :3].any()
    assert dec[3, 2] and not dec[2, 1] and not dec[2, 3] and not dec[1, 2]  # causal, block-diagonal
    assert cross[:2, :3].all() and not cross[:2, 3:].any() and cross[2:, 3:].all() and not cross[2:, :3].any()


@pytest.mark.parametrize("attention", ["segments", "dense"])
def test_packed_step_runs_wholly_on_the_models_device(attention):
    """On a GPU the masks must be made there: a CPU helper tensor would fail (or copy B x S x S per step).
    The meta device stands in for CUDA, which CI lacks: mixing it with a CPU tensor fails the same way."""
    batch = to_device(pack(_examples(4), [[0, 1], [2, 3]], PAD, PAD), "meta")
    for mask in attention_masks(batch, torch.bfloat16):
        assert mask.device.type == "meta" and mask.dtype == torch.bfloat16
    tiny = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1)
    model = build_tiny(tiny, VOCAB, PAD, EOS, seed=0).to("meta")
    loss = token_loss(packed_forward(model, batch, attention), batch)
    loss.backward()
    assert loss.device.type == "meta" and model.lm_head.weight.grad.device.type == "meta"


@pytest.mark.parametrize("attention", ["segments", "dense"])
def test_packed_loss_equals_unpacked_loss_per_example(model, attention):
    torch.manual_seed(0)
    ex = _examples(24, seed=2)
    rows = plan_rows([(len(s), len(t)) for s, t in ex], 128, 48)
    assert max(len(r) for r in rows) >= 3
    batch = pack(ex, rows, PAD, model.config.decoder_start_token_id)
    with torch.no_grad():
        packed = per_example_loss(packed_forward(model, batch, attention), batch, len(ex))
        alone = torch.stack([_alone(model, s, t) for s, t in ex])
    assert torch.allclose(packed, alone, atol=1e-5, rtol=0), (packed - alone).abs().max()


@pytest.mark.parametrize("attention", ["segments", "dense"])
def test_packed_gradients_equal_unpacked_gradients(model, attention):
    ex = _examples(6, seed=4)
    batch = pack(ex, plan_rows([(len(s), len(t)) for s, t in ex], 256, 96), PAD, model.config.decoder_start_token_id)
    model.zero_grad()
    per_example_loss(packed_forward(model, batch, attention), batch, len(ex)).sum().backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(_alone(model, s, t) for s, t in ex).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(packed[n], p.grad, atol=1e-5), n
    model.zero_grad()


def test_fill_rows_streams_examples_into_rows_and_carries_the_rest():
    from dataclasses import dataclass

    @dataclass
    class Ex:
        key: tuple
        input_ids: list
        labels: list

    rng = random.Random(3)
    stream = iter([Ex(("s", i), [5] * rng.randint(3, 40), [6] * rng.randint(2, 12)) for i in range(10_000)])
    pending, seen = [], []
    for _ in range(20):
        rows, pending = fill_rows(lambda: next(stream), pending, 4, 64, 16)
        assert 1 <= len(rows) <= 4 and len(pending) <= 4
        for row in rows:
            assert sum(len(e.input_ids) for e in row) <= 64 and sum(len(e.labels) for e in row) <= 16
            seen += [e.key[1] for e in row]
    drawn = max(seen + [e.key[1] for e in pending]) + 1
    # every drawn example is used exactly once or still waiting: nothing dropped, nothing twice
    assert sorted(seen + [e.key[1] for e in pending]) == list(range(drawn))
    batch = pack_examples(rows, 0, 0)
    assert batch.labels.shape[0] == len(rows) and int((batch.dec_segments > 0).sum()) == sum(
        len(e.labels) for row in rows for e in row)
    with pytest.raises(ValueError, match=r"example \('s', 1\) has 70/2 tokens"):
        fill_rows(lambda: Ex(("s", 1), [1] * 70, [1, 1]), [], 4, 64, 16)


def test_logits_at_the_targets_only_give_the_same_loss_and_gradients(model):
    ex = _examples(10, seed=6)
    batch = pack(ex, plan_rows([(len(s), len(t)) for s, t in ex], 128, 48), PAD, model.config.decoder_start_token_id)
    losses, grads = [], []
    for targets_only in (False, True):
        model.zero_grad()
        logits = packed_forward(model, batch, targets_only=targets_only)
        assert logits.dim() == (2 if targets_only else 3)
        loss = token_loss(logits, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert logits.shape[0] == int((batch.labels != -100).sum())
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n
    assert not model.lm_head._forward_pre_hooks  # the hook is gone after the forward
    model.zero_grad()
