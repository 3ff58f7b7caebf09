"""Per-segment attention for packed rows: each example attends only within itself, and nothing is
computed for the pairs of tokens that belong to different examples.

A packed row holds several examples back to back. The dense way (packing.attention_masks) computes
row x row scores and masks most of them away; here each attention gathers every segment's queries,
keys and values into tiles of a few shared lengths (multiples of TILE), runs SDPA on the tiles and
scatters the outputs back into the row, so the work is sum(len^2) over segments, not row^2.

- T5's relative position bias depends only on key minus query position, so a segment of length L
  uses the [:L, :L] slice of the bias computed for the row: exact, and gradients reach the bias table.
  Cross-attention has no position bias in T5 (its bias tensor is zeros) and uses none here.
- A causal segment's right-padded tile slots need no key mask: a real query only sees keys at or
  before it, which are real. Slots past a segment's end are computed and thrown away.
- The layout is built on the host from the rows' segment lengths (no device sync per step) and sent
  to the model's device with the batch; it reaches the attention as the `packed_segments` keyword,
  which transformers passes down to every attention call.

Installed as a registered attention implementation (transformers' AttentionInterface). Called without
`packed_segments` (generation, padded batches) it is plain SDPA, with SDPA's masks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

NAME = "mixtune_segments"
TILE = 32  # tile lengths are multiples of this: fewer SDPA calls against a little padding per segment


@dataclass
class Tile:
    """Segments of one attention that share a tile shape."""
    q_index: torch.Tensor  # [n, Lq] flat query positions (row * Q + t); slots past the end repeat the last
    k_index: torch.Tensor  # [n, Lk] flat key positions
    key_ok: torch.Tensor | None  # [n, 1, 1, Lk] bool, False on slots past a segment's keys (None: causal)
    q_keep: torch.Tensor  # [m] slots (into n * Lq) that hold real queries
    q_dest: torch.Tensor  # [m] their flat positions in the rows

    def to(self, device) -> Tile:
        move = (lambda t: None if t is None else t.to(device, non_blocking=True))
        return Tile(move(self.q_index), move(self.k_index), move(self.key_ok), move(self.q_keep), move(self.q_dest))


@dataclass
class Layout:
    """One attention's segments in a batch: encoder self, decoder self, or cross. Every tile's indexes
    are also kept concatenated, so a call gathers and scatters once, not once per tile: the backward
    of each gather allocates and zero-fills a gradient the size of the whole batch."""
    tiles: list[Tile]
    causal: bool
    q_all: torch.Tensor  # every tile's q_index, flattened and concatenated
    k_all: torch.Tensor
    keep_all: torch.Tensor  # every tile's q_keep, offset into the concatenated query slots
    dest: torch.Tensor  # every tile's q_dest, concatenated
    cache: dict = field(default_factory=dict, repr=False)  # per forward: masks shared by all layers

    @classmethod
    def of(cls, tiles: list[Tile], causal: bool) -> Layout:
        offsets = [0]
        for t in tiles:
            offsets.append(offsets[-1] + t.q_index.numel())
        return cls(tiles, causal, torch.cat([t.q_index.reshape(-1) for t in tiles]),
                   torch.cat([t.k_index.reshape(-1) for t in tiles]),
                   torch.cat([t.q_keep + o for t, o in zip(tiles, offsets)]), torch.cat([t.q_dest for t in tiles]))

    def to(self, device) -> Layout:
        move = (lambda t: t.to(device, non_blocking=True))
        return Layout([t.to(device) for t in self.tiles], self.causal, move(self.q_all), move(self.k_all),
                      move(self.keep_all), move(self.dest))


def tile_length(n: int, cap: int) -> int:
    """The tile a segment of n tokens is computed in: n rounded up to TILE, at most the row."""
    return min(-(-n // TILE) * TILE, cap)


def build_layout(segments: list[tuple[int, int, int, int, int]], q_len: int, k_len: int,
                 causal: bool) -> Layout:
    """segments: (row, query start, query length, key start, key length), one per example."""
    groups: dict[tuple[int, int], list] = {}
    for seg in segments:
        groups.setdefault((tile_length(seg[2], q_len), tile_length(seg[4], k_len)), []).append(seg)
    tiles = []
    for (lq, lk), segs in sorted(groups.items()):
        slots_q, slots_k = torch.arange(lq), torch.arange(lk)
        q_index = torch.stack([b * q_len + qs + slots_q.clamp(max=ql - 1) for b, qs, ql, _, _ in segs])
        k_index = torch.stack([b * k_len + ks + slots_k.clamp(max=kl - 1) for b, _, _, ks, kl in segs])
        real_q = torch.stack([slots_q < ql for _, _, ql, _, _ in segs]).reshape(-1)
        key_ok = None if causal else torch.stack([slots_k < kl for *_, kl in segs])[:, None, None, :]
        tiles.append(Tile(q_index, k_index, key_ok, real_q.nonzero().squeeze(1), q_index.reshape(-1)[real_q]))
    return Layout.of(tiles, causal)


def row_segments(lengths: list[list[int]]) -> list[tuple[int, int, int]]:
    """(row, start, length) of each example, from each row's example lengths, in row order."""
    out = []
    for b, row in enumerate(lengths):
        start = 0
        for n in row:
            out.append((b, start, n))
            start += n
    return out


def _mask(layout: Layout, tile_no: int, tile: Tile, bias: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """The tile's additive mask: the bias slice if any, with causality or key padding; None where
    SDPA's own causal kernel does. It is the same for every layer of a stack (T5 computes its bias
    once and shares it), so it is made once per forward (and dropped after it: release())."""
    hit = layout.cache.get((tile_no, dtype))
    if hit is not None and hit[0] is bias:
        return hit[1]
    lq, lk = tile.q_index.shape[1], tile.k_index.shape[1]
    if layout.causal:
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=tile.q_index.device).tril()[None, None]
    else:
        allowed = tile.key_ok  # [n, 1, 1, Lk]
    if bias is None:  # additive, not bool: on CPU a bool mask sends SDPA down its unfused math path
        mask = None if layout.causal else torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    else:  # [1, H, Q, K] -> its [:Lq, :Lk] slice, exact for a segment at any offset in the row
        mask = bias[:, :, :lq, :lk].to(dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    layout.cache[(tile_no, dtype)] = (bias, mask)
    return mask


def segment_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      position_bias=None, packed_segments=None, **kwargs):
    """transformers' attention signature: q [B, H, Q, D], k/v [B, Hkv, K, D] -> ([B, Q, H, D], None)."""
    if packed_segments is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if position_bias is not None:
            kwargs["position_bias"] = position_bias
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    role = getattr(module, "mixtune_role", None)
    if role is None:
        raise ValueError(f"packed rows: segment attention does not know {type(module).__name__} (install() tags T5 "
                         "and Llama-style attention modules); set train.packing: false for this model")
    layout: Layout = packed_segments[role]
    B, H, Q, D = query.shape
    if key.shape[1] != H:  # grouped-query attention: every query head reads its key/value head
        key, value = (t.repeat_interleave(H // t.shape[1], dim=1) for t in (key, value))
    qf, kf, vf = (t.transpose(1, 2).reshape(-1, H, t.shape[-1]) for t in (query, key, value))
    bias = None if role == "cross" else position_bias
    # One gather per tensor for all tiles, split into tiles (split's backward is one cat); index_select,
    # not f[idx], whose backward is a sorted index_put.
    q_sizes = [t.q_index.numel() for t in layout.tiles]
    k_sizes = [t.k_index.numel() for t in layout.tiles]
    qs = qf.index_select(0, layout.q_all).split(q_sizes)
    ks, vs = (f.index_select(0, layout.k_all).split(k_sizes) for f in (kf, vf))
    outs = []
    for i, tile in enumerate(layout.tiles):
        n, lq = tile.q_index.shape
        lk = tile.k_index.shape[1]
        q = qs[i].view(n, lq, H, -1).transpose(1, 2)
        k, v = (t[i].view(n, lk, H, -1).transpose(1, 2) for t in (ks, vs))
        mask = _mask(layout, i, tile, bias, query.dtype)
        causal = layout.causal and mask is None  # no bias: SDPA's own causal kernel
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout if module.training else 0.0,
                                           is_causal=causal, scale=scaling)
        outs.append(o.transpose(1, 2).reshape(n * lq, H, -1))
    out = torch.cat(outs).index_select(0, layout.keep_all)
    out = out.new_zeros(B * Q, H, out.shape[-1]).index_copy(0, layout.dest, out)
    return out.view(B, Q, H, -1), None


def release(layouts: dict) -> None:
    """Drop the masks cached during a forward: autograd keeps what backward needs, and the batch's
    layouts would otherwise hold them until the next batch is built."""
    for layout in layouts.values():
        layout.cache.clear()


def install(model) -> None:
    """Use segment_attention in this model (idempotent): register it, and tag each attention module
    with the layout it reads (T5: encoder / decoder / cross; decoder-only: decoder)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    base = getattr(model, "module", model)  # a DeepSpeed engine wraps the transformers model
    if getattr(base.config, "_attn_implementation", None) == NAME:
        return
    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # unpacked calls get SDPA's masks
    for name, mod in base.named_modules():
        if name.endswith("EncDecAttention"):
            mod.mixtune_role = "cross"
        elif hasattr(mod, "is_causal") and (name.endswith(".SelfAttention") or name.endswith(".self_attn")):
            mod.mixtune_role = "decoder" if getattr(mod, "is_decoder", True) else "encoder"
    base.set_attn_implementation(NAME)
