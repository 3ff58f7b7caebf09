"""A rank's micro-batches: padded or packed rows, seq2seq or decoder-only, drawn from the loader, with
a state that a checkpoint carries (the loader's counters and any examples drawn but not yet packed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from components.train import causal_packing, flops, packing
from components.train.causal_packing import causal_sequence

if TYPE_CHECKING:  # annotations only: the collators and loss run where pydantic and boto3 are absent
    from components.common.config import MixtuneConfig
    from components.train.loader import Example


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest row in this batch: inputs with pad (masked), labels with -100 (ignored)."""
    src_len = max(len(s) for s, _ in rows)
    tgt_len = max(len(t) for _, t in rows)
    input_ids = torch.full((len(rows), src_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), src_len), dtype=torch.long)
    labels = torch.full((len(rows), tgt_len), -100, dtype=torch.long)
    for i, (src, tgt) in enumerate(rows):
        input_ids[i, : len(src)] = torch.tensor(src)
        attention_mask[i, : len(src)] = 1
        labels[i, : len(tgt)] = torch.tensor(tgt)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_causal(rows: list[tuple[list[int], list[int]]], pad_id: int, eos_id: int,
                   bos_id: int | None = None) -> dict[str, torch.Tensor]:
    """Decoder-only rows: prompt then target in one sequence (causal_packing.causal_sequence), the loss
    on the target only, padded to the longest row. The model shifts labels itself."""
    pairs = [causal_sequence(src, tgt, eos_id, bos_id) for src, tgt in rows]
    length = max(len(s) for s, _ in pairs)
    batch = {"input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(rows), length), dtype=torch.long),
             "labels": torch.full((len(rows), length), -100, dtype=torch.long)}
    for i, (seq, lab) in enumerate(pairs):
        batch["input_ids"][i, : len(seq)] = torch.tensor(seq)
        batch["attention_mask"][i, : len(seq)] = 1
        batch["labels"][i, : len(lab)] = torch.tensor(lab)
    return batch


def seq2seq_loss(model, base, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the real target tokens, in fp32 as packing.token_loss takes it: under
    DeepSpeed bf16 a Hugging Face seq2seq model's own loss would be taken on bf16 logits.
    model: what runs the forward (the DeepSpeed engine); base: the transformers model inside it.
    The LM head runs on the real target tokens only (packing.logits_at), not on the padding."""
    labels = batch["labels"]
    real = labels != -100
    with packing.logits_at(base, real):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=base.prepare_decoder_input_ids_from_labels(labels=labels))
    return F.cross_entropy(out.logits.float(), labels[real])


class Batches:
    """This rank's micro-batches from the loader, padded or packed, with a resumable state."""

    def __init__(self, loader, cfg: MixtuneConfig, micro: int, pad: int, start: int,
                 causal: bool = False, eos: int | None = None, bos: int | None = None):
        self.loader, self.cfg, self.micro, self.pad, self.start = loader, cfg, micro, pad, start
        self.causal, self.eos, self.bos = causal, eos, bos
        self.pending: list[Example] = []  # packing: drawn examples that did not fit the last batch

    def next(self, device) -> tuple[packing.PackedBatch | dict, flops.Moments, bool]:
        """(model inputs on `device`, the examples' lengths, packed?) of the next micro-batch. The
        lengths (real tokens = src + tgt, and what model FLOPs need) are read on the host, before the
        copy: reading them from GPU tensors would stall the host on the GPU every micro-batch."""
        m = self.cfg.model
        if self.cfg.train.packing and self.causal:  # one budget: prompt + target, as padded rows allow
            rows, self.pending = packing.fill_rows(self.loader.next, self.pending, self.micro,
                                                   m.max_source_length + m.max_target_length, 0,
                                                   size=causal_packing.causal_length(self.eos, self.bos))
            cb = causal_packing.pack_causal_examples(rows, self.pad, self.eos, self.bos)
            return causal_packing.to_device(cb, device), flops.batch_moments(cb, packed=True, causal=True), True
        if self.cfg.train.packing:
            rows, self.pending = packing.fill_rows(self.loader.next, self.pending, self.micro,
                                                   m.max_source_length, m.max_target_length)
            pb = packing.pack_examples(rows, self.pad, self.start)
            return packing.to_device(pb, device), flops.batch_moments(pb, packed=True, causal=False), True
        rows = [(e.input_ids, e.labels) for e in self.loader.batch(self.micro)]
        batch = collate_causal(rows, self.pad, self.eos, self.bos) if self.causal else collate(rows, self.pad)
        moments = flops.batch_moments(batch, packed=False, causal=self.causal)
        return {k: v.to(device) for k, v in batch.items()}, moments, False

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict(), "pending": [list(e.key) for e in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state["loader"])
        self.pending = [self.loader.example(tuple(k)) for k in state["pending"]]
