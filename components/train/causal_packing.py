"""Packed decoder-only batches: several prompt + target sequences back to back in one row, padding-free
as the decoder-only fine-tuning stacks pack them.

- positions restart at 0 for each sequence (position_ids), so rotary or learned positions are those
  the sequence has alone;
- attention is causal inside each sequence and never crosses into the one before
  (segment_attention: per-sequence tiles, no row x row mask);
- the loss is on target tokens only, and the first token of a sequence is not predicted from the
  last token of the previous one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.train import segment_attention
from components.train.packing import logits_at, row_index


@dataclass
class CausalPackedBatch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], -100 on prompts and padding; position t predicts labels[t + 1]
    position_ids: torch.Tensor  # [B, L], 0.. per sequence
    segments: torch.Tensor  # [B, L], 1.. per sequence, 0 = padding
    examples: list[list[int]]  # per row, the example indexes packed into it
    layouts: dict  # segment_attention's tiles: {"decoder": causal layout}


def causal_sequence(src: list[int], tgt: list[int], eos_id: int, bos_id: int | None = None
                    ) -> tuple[list[int], list[int]]:
    """(prompt + target, labels) of one example: the target ends with </s> so the model learns to stop
    (a decoder tokenizer may not append it) and loses a leading BOS (some add one to every text)."""
    tgt = list(tgt[1:] if bos_id is not None and tgt[:1] == [bos_id] else tgt)
    if not tgt or tgt[-1] != eos_id:
        tgt.append(eos_id)
    return list(src) + tgt, [-100] * len(src) + tgt


def pack_causal(sequences: list[tuple[list[int], list[int]]], rows: list[list[int]], pad_id: int
                ) -> CausalPackedBatch:
    """Lay (sequence, labels) pairs, as causal_sequence makes them, into rows of example indexes."""
    L = max(sum(len(sequences[i][0]) for i in row) for row in rows)
    B = len(rows)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    positions = torch.zeros((B, L), dtype=torch.long)
    segments = torch.zeros((B, L), dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for k, i in enumerate(row, start=1):
            seq, lab = sequences[i]
            ids[b, t:t + len(seq)] = torch.tensor(seq)
            labels[b, t:t + len(seq)] = torch.tensor(lab)
            positions[b, t:t + len(seq)] = torch.arange(len(seq))
            segments[b, t:t + len(seq)] = k
            t += len(seq)
    segs = segment_attention.row_segments([[len(sequences[i][0]) for i in row] for row in rows])
    layout = segment_attention.build_layout([(b, s, n, s, n) for b, s, n in segs], L, L, causal=True)
    return CausalPackedBatch(ids, labels, positions, segments, [list(r) for r in rows], {"decoder": layout})


def pack_causal_examples(rows: list[list], pad_id: int, eos_id: int, bos_id: int | None = None
                         ) -> CausalPackedBatch:
    """pack_causal() for rows of example objects (.input_ids, .labels), as fill_rows returns them."""
    flat = [causal_sequence(ex.input_ids, ex.labels, eos_id, bos_id) for row in rows for ex in row]
    return pack_causal(flat, row_index(rows), pad_id)


def causal_length(eos_id: int, bos_id: int | None = None):
    """fill_rows' size for decoder-only rows: (the whole sequence, 0), against (max length, 0)."""
    return lambda ex: (len(causal_sequence(ex.input_ids, ex.labels, eos_id, bos_id)[0]), 0)


def causal_forward(model, batch: CausalPackedBatch, targets_only: bool = False, attention: str = "segments"
                   ) -> torch.Tensor:
    """Logits of a Hugging Face decoder-only LM on a packed batch: [B, L, V], or with targets_only
    [N, V] at the N positions that predict a target token (what causal_token_loss takes either way).
    attention "segments": per-sequence tiles; "dense": transformers' own padding-free path, which
    derives a row x row block-causal mask from the restarting position_ids."""
    segments = batch.layouts if attention == "segments" else None
    if segments is not None:
        segment_attention.install(model)
    at = None
    if targets_only:
        at = torch.zeros_like(batch.labels, dtype=torch.bool)
        at[:, :-1] = _shifted_labels(batch) != -100
    extra = {} if segments is None else {"packed_segments": segments}
    try:
        with logits_at(model, at):
            return model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, **extra).logits
    finally:
        segment_attention.release(batch.layouts)


def _shifted_labels(batch: CausalPackedBatch) -> torch.Tensor:
    """labels[:, 1:], with -100 where the next token starts another sequence."""
    nxt = batch.labels[:, 1:]
    return nxt.masked_fill(batch.segments[:, 1:] != batch.segments[:, :-1], -100)


def causal_token_loss(logits: torch.Tensor, batch: CausalPackedBatch) -> torch.Tensor:
    """Mean cross-entropy over the batch's target tokens, in fp32: what a padded causal LM's loss is.
    logits: [B, L, V], or [N, V] from causal_forward's targets_only."""
    target = _shifted_labels(batch)
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), target[target != -100])
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(), ignore_index=-100)


def causal_per_example_loss(logits: torch.Tensor, batch: CausalPackedBatch, n_examples: int) -> torch.Tensor:
    """Mean target-token cross-entropy of each example, in the original example order: [n_examples]."""
    target = _shifted_labels(batch)
    tok = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(), ignore_index=-100,
                          reduction="none").view(target.shape)
    out = torch.zeros(n_examples, dtype=torch.float32, device=logits.device)
    for b, row in enumerate(batch.examples):
        for k, i in enumerate(row, start=1):
            sel = (batch.segments[b, :-1] == k) & (target[b] != -100)
            out[i] = tok[b][sel].sum() / sel.sum()
    return out


def to_device(batch: CausalPackedBatch, device) -> CausalPackedBatch:
    return CausalPackedBatch(batch.input_ids.to(device), batch.labels.to(device), batch.position_ids.to(device),
                             batch.segments.to(device), batch.examples,
                             {k: v.to(device) for k, v in batch.layouts.items()})
