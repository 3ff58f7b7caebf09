"""Packed vs padded decoder-only training throughput (non-pad tokens/s), same model, same data, same run.

    python benchmarks/causal_packing_throughput.py [--examples 2000] [--steps 16] [--hidden 256] [--layers 8]
                                                   [--group-by-length]

Data: DialogSum + SAMSum, each example one sequence: dialogue (the prompt, up to 512 T5 tokens) then
its summary (up to 128), the loss on the summary only (components/train/causal_packing.causal_sequence).
Model: a randomly initialised Llama of the given shape (T5 tokenizer's vocabulary), the same initial
weights (seed 0) and a fresh AdamW (same lr, constant) for each mode:
- trainer: a stock Hugging Face `Trainer` with `DataCollatorForSeq2Seq` (dynamic padding to the longest
  sequence of each batch; labels padded with -100), --batch sequences per step, CPU, no eval, no saving,
  in a shuffled order, or with --group-by-length its `LengthGroupedSampler`;
- packed: the same sequences packed into rows of 640 tokens as training fills them (fill_rows over the
  same shuffled stream), positions restarting per sequence, per-sequence causal attention
  (components/train/segment_attention.py), the same tokens per step on average;
- packed, HF mask: the same packed rows handed to transformers with position_ids only, so that
  transformers builds its own block-diagonal causal mask from them (the padding-free path of
  DataCollatorWithFlattening): row x row attention with most of it masked.
The modes are interleaved step by step (see benchmarks/packing_throughput.py); each trains --warmup
untimed steps, then --steps timed ones. Throughput counts only real prompt + target tokens.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from components.train import causal_packing as cp  # noqa: E402
from components.train.packing import fill_rows  # noqa: E402
from packing_throughput import LR, SHARED, Ex, Meter, hf_trainer, load_pairs  # noqa: E402

MAX_SRC, MAX_TGT = 512, 128
ROW = MAX_SRC + MAX_TGT


def trainer_counts(b) -> tuple[int, int]:
    return int(b["attention_mask"].sum()), b["input_ids"].numel()


def packed_step(model, opt, batches, segments: bool = True):
    def step(i):
        b = batches[i]
        logits = cp.causal_forward(model, b, targets_only=True, attention="segments" if segments else "dense")
        cp.causal_token_loss(logits, b).backward()
        opt.step()
        opt.zero_grad()
        return int((b.segments > 0).sum()), b.input_ids.numel()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="trainer: sequences per step")
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    args = p.parse_args()
    from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, LlamaConfig, LlamaForCausalLM, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(SHARED / "models" / "t5-tokenizer")
    pairs = load_pairs(args.examples, 0)
    src = tok([a for a, _ in pairs], truncation=True, max_length=MAX_SRC)["input_ids"]
    tgt = tok([b for _, b in pairs], truncation=True, max_length=MAX_TGT)["input_ids"]
    eos = tok.eos_token_id
    seqs = [cp.causal_sequence(s, t, eos) for s, t in zip(src, tgt)]
    heads = max(1, args.hidden // 64)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=64, max_position_embeddings=1024, pad_token_id=tok.pad_token_id, eos_token_id=eos,
                      bos_token_id=None, tie_word_embeddings=True)

    def fresh():
        torch.manual_seed(0)
        m = LlamaForCausalLM(cfg).train()
        return m, torch.optim.AdamW(m.parameters(), lr=LR)

    order = list(range(len(seqs)))
    random.Random(1).shuffle(order)
    features = [{"input_ids": seqs[i][0], "labels": seqs[i][1]} for i in order]
    w, n = args.warmup, args.steps
    mean_len = sum(len(s) for s, _ in seqs) / len(seqs)
    per_step = max(1, round(args.batch * mean_len / ROW / 0.95))  # rows fill to about 95 %
    stream = iter([Ex(i, src[i], tgt[i]) for i in order])
    size = cp.causal_length(eos)
    batches, pending = [], []
    for _ in range(w + n):
        rows, pending = fill_rows(lambda: next(stream), pending, per_step, ROW, 0, size=size)
        batches.append(cp.pack_causal_examples(rows, tok.pad_token_id, eos))
    per_row = sum(sum(map(len, b.examples)) for b in batches) / sum(len(b.examples) for b in batches)

    packed, hf_mask = Meter(), Meter()
    trainer = hf_trainer(Trainer, TrainingArguments, DataCollatorForSeq2Seq(tok, model=None, padding=True),
                         *fresh(), tok, features, args.batch, w, n, args.group_by_length,
                         [(packed, packed_step(*fresh(), batches)), (hf_mask, packed_step(*fresh(), batches, False))],
                         counts=trainer_counts)
    (pack_tps, pack_fill), (mask_tps, _) = packed.row(), hf_mask.row()
    sampler = "LengthGroupedSampler" if args.group_by_length else "shuffled order"
    params = sum(p.numel() for p in fresh()[0].parameters()) / 1e6
    print(f"model: Llama hidden {args.hidden}, {args.layers} layers, {heads} heads, {params:.1f} M params, fp32, "
          f"{torch.get_num_threads()} threads")
    print(f"data: {len(seqs)} DialogSum+SAMSum sequences (prompt <= {MAX_SRC} + summary <= {MAX_TGT}), mean "
          f"{mean_len:.0f} tokens; packed rows of {ROW}, {per_row:.2f} sequences/row; {w} warm-up + {n} timed "
          f"steps per mode, interleaved; AdamW lr {LR:g} constant, no clipping")
    print("| mode | non-pad tokens/s | share of computed tokens that are real |\n|---|---|---|")
    print(f"| Trainer ({args.batch} sequences/step, DataCollatorForSeq2Seq, {sampler}) | {trainer['tps']:,.0f} "
          f"| {trainer['fill']:.1%} |")
    print(f"| packed ({per_step} rows/step of {ROW}, per-sequence attention) | {pack_tps:,.0f} | {pack_fill:.1%} |")
    print(f"| packed, transformers' mask from position_ids (same rows) | {mask_tps:,.0f} | {pack_fill:.1%} |")
    goal = 1.0 if args.group_by_length else 1.5
    ratio = pack_tps / trainer["tps"]
    print(f"speed-up packed/Trainer: {ratio:.2f}x (goal >= {goal}x with {sampler}: "
          f"{'MET' if ratio >= goal else 'NOT MET'}); packed/transformers' mask: {pack_tps / mask_tps:.2f}x")
    print("command: python benchmarks/causal_packing_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
