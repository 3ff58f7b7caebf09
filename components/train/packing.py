"""Packed encoder-decoder batches: several (input, target) examples share one encoder row and one
decoder row, and attention keeps them apart.

- encoder self-attention: block-diagonal (a token sees only its own example's tokens);
- decoder self-attention: causal and block-diagonal;
- cross-attention: a target token sees only the encoder tokens of its own example.

T5's relative position bias depends only on the distance between two tokens, and examples are
contiguous inside a row, so every distance a token can see is the same as when the example is alone:
no per-segment position ids are needed. Masks are additive (0 or the dtype's minimum), which is what
Hugging Face T5 adds to its attention scores when it is handed a 4D mask.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.train import segment_attention


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [B, S]
    decoder_input_ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], -100 on padding
    enc_segments: torch.Tensor  # [B, S], 1.. per example, 0 = padding
    dec_segments: torch.Tensor  # [B, T]
    examples: list[list[int]]  # per row, the indexes of the examples packed into it (segment k = examples[k-1])
    layouts: dict | None = None  # segment_attention's per-segment tiles: encoder, decoder, cross


WINDOW = 256  # open rows searched per example: first-fit over all rows is quadratic in the data


def plan_rows(lengths: list[tuple[int, int]], max_source: int, max_target: int) -> list[list[int]]:
    """First-fit decreasing over a window of open rows: example indexes per row so that no row
    exceeds either length budget. Deterministic: it depends only on the lengths."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i][0], -lengths[i][1], i))
    rows: list[list[int]] = []
    used: list[list[int]] = []  # [source tokens, target tokens] per row
    open_rows: list[int] = []
    for i in order:
        s, t = lengths[i]
        if s > max_source or t > max_target:
            raise ValueError(f"example {i} has {s}/{t} tokens, over the row budget {max_source}/{max_target}")
        for r in open_rows[-WINDOW:]:
            if used[r][0] + s <= max_source and used[r][1] + t <= max_target:
                rows[r].append(i)
                used[r][0] += s
                used[r][1] += t
                break
        else:
            rows.append([i])
            used.append([s, t])
            open_rows.append(len(rows) - 1)
        if len(open_rows) > 4 * WINDOW:  # forget rows that left the window
            open_rows = open_rows[-WINDOW:]
    return rows


def pack(examples: list[tuple[list[int], list[int]]], rows: list[list[int]], pad_id: int,
         decoder_start_id: int) -> PackedBatch:
    """Lay out (input_ids, labels) examples into packed rows; decoder inputs are shifted per example."""
    S = max(sum(len(examples[i][0]) for i in row) for row in rows)
    T = max(sum(len(examples[i][1]) for i in row) for row in rows)
    B = len(rows)
    inp = torch.full((B, S), pad_id, dtype=torch.long)
    dec = torch.full((B, T), pad_id, dtype=torch.long)
    lab = torch.full((B, T), -100, dtype=torch.long)
    es = torch.zeros((B, S), dtype=torch.long)
    ds = torch.zeros((B, T), dtype=torch.long)
    enc_segs = segment_attention.row_segments([[len(examples[i][0]) for i in row] for row in rows])
    dec_segs = segment_attention.row_segments([[len(examples[i][1]) for i in row] for row in rows])
    layouts = {"encoder": segment_attention.build_layout([(b, s, n, s, n) for b, s, n in enc_segs], S, S, False),
               "decoder": segment_attention.build_layout([(b, t, n, t, n) for b, t, n in dec_segs], T, T, True),
               "cross": segment_attention.build_layout(
                   [(b, t, n, s, m) for (b, t, n), (_, s, m) in zip(dec_segs, enc_segs)], T, S, False)}
    for b, row in enumerate(rows):
        s = t = 0
        for k, i in enumerate(row, start=1):
            src, tgt = examples[i]
            inp[b, s:s + len(src)] = torch.tensor(src)
            es[b, s:s + len(src)] = k
            lab[b, t:t + len(tgt)] = torch.tensor(tgt)
            dec[b, t:t + len(tgt)] = torch.tensor([decoder_start_id] + tgt[:-1])  # shift inside the example
            ds[b, t:t + len(tgt)] = k
            s, t = s + len(src), t + len(tgt)
    return PackedBatch(inp, dec, lab, es, ds, [list(r) for r in rows], layouts)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] bool -> [B, 1, Q, K] additive mask."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def attention_masks(batch: PackedBatch, dtype: torch.dtype = torch.float32):
    """(encoder self, decoder self, cross) 4D additive masks for a packed batch, built where its
    segments are (on the GPU in training: no per-step host-to-device copy of B x S x S masks)."""
    es, ds = batch.enc_segments, batch.dec_segments
    dev = es.device
    enc = (es[:, :, None] == es[:, None, :]) & (es[:, :, None] > 0)
    T = ds.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    dec = (ds[:, :, None] == ds[:, None, :]) & causal & (ds[:, :, None] > 0)
    cross = (ds[:, :, None] == es[:, None, :]) & (ds[:, :, None] > 0)
    # A padding query row that sees nothing would softmax over nothing: let it see itself / slot 0.
    enc |= torch.eye(es.shape[1], dtype=torch.bool, device=dev)[None] & (es[:, :, None] == 0)
    dec |= torch.eye(T, dtype=torch.bool, device=dev)[None] & (ds[:, :, None] == 0)
    cross[..., 0] |= ds == 0
    return _additive(enc, dtype), _additive(dec, dtype), _additive(cross, dtype)


@contextmanager
def logits_at(model, positions: torch.Tensor | None):
    """Inside it, the model's LM head sees only the hidden states at `positions` ([B, T] bool), so its
    logits come back as [N, V]: the head and the loss (the largest matmul and softmax of a small
    model's step) skip the rows' padding. None: every position, as usual."""
    if positions is None:
        yield
        return
    base = getattr(model, "module", model)  # a DeepSpeed engine wraps the transformers model
    handle = base.get_output_embeddings().register_forward_pre_hook(
        lambda _, args: (args[0][positions], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def packed_forward(model, batch: PackedBatch, attention: str = "segments", targets_only: bool = False
                   ) -> torch.Tensor:
    """Logits of a Hugging Face encoder-decoder (T5) on a packed batch: [B, T, V], or with targets_only
    [N, V] for the N real target tokens in row order (what token_loss takes either way).

    attention "segments" (segment_attention): each example's attention is computed on its own tokens
    only. "dense": row x row attention with the block-diagonal masks above, the encoder run alone
    with its mask, then the model with the cross-attention mask as `attention_mask` (what T5 hands
    the decoder as `encoder_attention_mask`)."""
    with logits_at(model, batch.labels != -100 if targets_only else None):
        if attention == "segments":
            segment_attention.install(model)
            try:
                hidden = model.get_encoder()(input_ids=batch.input_ids,
                                             packed_segments=batch.layouts).last_hidden_state
                return model(encoder_outputs=(hidden,), decoder_input_ids=batch.decoder_input_ids, use_cache=False,
                             packed_segments=batch.layouts).logits
            finally:
                segment_attention.release(batch.layouts)
        dtype = next(model.parameters()).dtype
        enc_mask, dec_mask, cross_mask = attention_masks(batch, dtype)
        hidden = model.get_encoder()(input_ids=batch.input_ids, attention_mask=enc_mask).last_hidden_state
        return model(encoder_outputs=(hidden,), attention_mask=cross_mask, decoder_input_ids=batch.decoder_input_ids,
                     decoder_attention_mask=dec_mask, use_cache=False).logits


def token_loss(logits: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Mean cross-entropy over the batch's real target tokens: what a padded batch's loss means too.
    logits: [B, T, V], or [N, V] at the real targets only (packed_forward's targets_only)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), batch.labels[batch.labels != -100])
    # over [B * T, V]: a transposed [B, V, T] input makes log_softmax run over a strided dim and copy
    return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=-100)


def to_device(batch: PackedBatch, device) -> PackedBatch:
    layouts = batch.layouts and {k: v.to(device) for k, v in batch.layouts.items()}
    return PackedBatch(batch.input_ids.to(device), batch.decoder_input_ids.to(device), batch.labels.to(device),
                       batch.enc_segments.to(device), batch.dec_segments.to(device), batch.examples, layouts)


def per_example_loss(logits: torch.Tensor, batch: PackedBatch, n_examples: int) -> torch.Tensor:
    """Mean token cross-entropy of each example, in the original example order: [n_examples]."""
    tok = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=-100,
                          reduction="none").view(batch.labels.shape)
    out = torch.zeros(n_examples, dtype=torch.float32, device=logits.device)
    for b, row in enumerate(batch.examples):
        for k, i in enumerate(row, start=1):
            sel = batch.dec_segments[b] == k
            out[i] = tok[b][sel].sum() / sel.sum()
    return out


def seq2seq_size(ex) -> tuple[int, int]:
    return len(ex.input_ids), len(ex.labels)


def fill_rows(draw, pending: list, n_rows: int, max_source: int, max_target: int,
              size=seq2seq_size) -> tuple[list, list]:
    """Online first-fit for streamed examples (objects with .input_ids and .labels): up to n_rows
    rows, first from `pending`, then from draw(). An example that fits no open row waits for the next
    batch; filling stops after n_rows such misses, when rows are nearly full. Returns (rows of
    examples, the new pending list), so the pending examples are all a resume needs to carry over.
    size(ex): its (source, target) tokens against the two budgets; decoder-only rows have one
    budget (causal_packing.causal_length: the whole sequence against max_source, and 0 against 0)."""
    rows: list[list] = []
    used: list[list[int]] = []
    waiting: list = []
    queue = list(pending)
    while len(waiting) < n_rows:
        ex = queue.pop(0) if queue else draw()
        s, t = size(ex)
        if s > max_source or t > max_target:
            raise ValueError(f"example {ex.key} has {s}/{t} tokens, over the row budget {max_source}/{max_target}")
        for r, (us, ut) in enumerate(used):
            if us + s <= max_source and ut + t <= max_target:
                rows[r].append(ex)
                used[r] = [us + s, ut + t]
                break
        else:
            if len(rows) < n_rows:
                rows.append([ex])
                used.append([s, t])
            else:
                waiting.append(ex)
    return rows, waiting + queue


def row_index(rows: list[list]) -> list[list[int]]:
    """Rows of objects -> rows of indexes into the flattened list of those objects."""
    index, k = [], 0
    for row in rows:
        index.append(list(range(k, k + len(row))))
        k += len(row)
    return index


def pack_examples(rows: list[list], pad_id: int, decoder_start_id: int) -> PackedBatch:
    """pack() for rows of example objects (.input_ids, .labels), as fill_rows returns them."""
    flat = [(ex.input_ids, ex.labels) for row in rows for ex in row]
    return pack(flat, row_index(rows), pad_id, decoder_start_id)
