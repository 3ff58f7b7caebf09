"""Per-segment attention: tiles cover each example's tokens once, skip every cross-example pair, and
fall back to plain SDPA when a call carries no segments."""
import pytest
import torch

from components.common.config import TinyModelConfig
from components.train import segment_attention
from components.train.model import build_tiny
from components.train.packing import pack

TINY = TinyModelConfig(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1)


def test_tiles_cover_each_query_once_and_only_their_own_keys():
    lengths = [[40, 7, 70], [120], [3, 3, 3]]
    segs = segment_attention.row_segments(lengths)
    assert segs[:3] == [(0, 0, 40), (0, 40, 7), (0, 47, 70)]
    layout = segment_attention.build_layout([(b, s, n, s, n) for b, s, n in segs], 128, 128, causal=False)
    assert sorted(layout.dest.tolist()) == sorted(b * 128 + s + j for b, s, n in segs for j in range(n))
    shapes = sorted(t.q_index.shape[1] for t in layout.tiles)
    assert shapes == [32, 64, 96, 128] and all(s % segment_attention.TILE == 0 for s in shapes)
    for tile in layout.tiles:  # a query's keys are all in its own example, padding slots masked
        for qi, ki, ok in zip(tile.q_index, tile.k_index, tile.key_ok[:, 0, 0]):
            owner = next(seg for seg in segs if seg[0] * 128 + seg[1] <= qi[0] < seg[0] * 128 + seg[1] + seg[2])
            lo = owner[0] * 128 + owner[1]
            assert ((ki[ok] >= lo) & (ki[ok] < lo + owner[2])).all() and int(ok.sum()) == owner[2]
    scored = sum(t.q_index.numel() * t.k_index.shape[1] for t in layout.tiles)
    assert scored == 64 ** 2 + 32 ** 2 + 96 ** 2 + 128 ** 2 + 3 * 32 ** 2  # sum(rounded len^2), not rows x 128^2
    assert scored < 0.7 * 3 * 128 ** 2


def test_cross_tiles_pair_each_target_with_its_own_source():
    batch = pack([([5] * 40 + [1], [7] * 9 + [1]), ([8] * 10 + [1], [9] * 33 + [1])], [[0, 1]], 0, 0)
    cross = batch.layouts["cross"]
    for tile in cross.tiles:
        for qi, ki, ok in zip(tile.q_index, tile.k_index, tile.key_ok[:, 0, 0]):
            src = range(0, 41) if qi[0] < 10 else range(41, 52)
            assert set(ki[ok].tolist()) == set(src)


def test_without_segments_it_is_sdpa():
    torch.manual_seed(0)
    model = build_tiny(TINY, 50, 0, 1, seed=0).eval()
    ids = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    mask = (ids != 0).long()
    labels = torch.tensor([[11, 12, 1], [13, 1, -100]])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        segment_attention.install(model)
        segment_attention.install(model)  # idempotent
        after = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert model.config._attn_implementation == segment_attention.NAME
    assert torch.allclose(before, after, atol=1e-6)
    roles = {n.rsplit(".", 1)[-1] + ":" + m.mixtune_role for n, m in model.named_modules() if hasattr(m, "mixtune_role")}
    assert roles == {"SelfAttention:encoder", "SelfAttention:decoder", "EncDecAttention:cross"}


@pytest.mark.parametrize("length", [1, 31, 32, 33, 128])
def test_tile_lengths_never_exceed_the_row(length):
    layout = segment_attention.build_layout([(0, 0, length, 0, length)], length, length, causal=True)
    (tile,) = layout.tiles
    assert tile.q_index.shape[1] <= length and tile.key_ok is None
    assert tile.q_dest.tolist() == list(range(length))


def test_masks_cached_for_a_forward_are_dropped_after_it():
    from components.train.packing import packed_forward, token_loss

    model = build_tiny(TINY, 50, 0, 1, seed=0)
    batch = pack([([5] * 40 + [1], [7] * 9 + [1]), ([8] * 10 + [1], [9] * 3 + [1])], [[0, 1]], 0, 0)
    loss = token_loss(packed_forward(model, batch, targets_only=True), batch)
    assert all(not layout.cache for layout in batch.layouts.values())
    loss.backward()  # what backward needs is held by autograd, not by the cache
    assert model.shared.weight.grad is not None
