"""Packed vs padded seq2seq training throughput (non-pad tokens/s), same model, same data, same run.

    python benchmarks/packing_throughput.py [--examples 2000] [--steps 20] [--d-model 256] [--layers 4]

Data: DialogSum + SAMSum dialogues -> summaries, tokenized with the real T5 tokenizer in ../shared
(inputs truncated to 512 tokens, targets to 128). Model: a randomly initialised T5 of the given shape.
- padded: random batches of --batch examples, dynamic padding by transformers' DataCollatorForSeq2Seq
  (the collator Seq2SeqTrainer uses), a plain forward/backward/AdamW loop (no Trainer overhead, which
  only flatters the baseline);
- packed: the same examples packed into rows of 512/128 tokens (components/train/packing.py), with
  block-diagonal masks, batches of --rows rows, the same loop.
Throughput counts only real (non-pad) source + target tokens.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

import torch  # noqa: E402

from components.train.packing import pack, packed_forward, per_example_loss, plan_rows  # noqa: E402

MAX_SRC, MAX_TGT = 512, 128


def load_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    ds = SHARED / "datasets"
    pairs = [(r["dialogue"], r["summary"]) for r in map(json.loads, (ds / "dialogsum" / "dialogsum.train.jsonl").open())]
    pairs += [(r["dialogue"], r["summary"]) for r in json.loads((ds / "samsum" / "train.json").read_text())
              if r["dialogue"].strip() and r["summary"].strip()]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16, help="padded: examples per step")
    p.add_argument("--rows", type=int, default=0, help="packed: rows per step (0 = same tokens per step)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(SHARED / "models" / "t5-tokenizer")
    pairs = load_pairs(args.examples, 0)
    src = tok([a for a, _ in pairs], truncation=True, max_length=MAX_SRC)["input_ids"]
    tgt = tok([b for _, b in pairs], truncation=True, max_length=MAX_TGT)["input_ids"]
    examples = list(zip(src, tgt))
    cfg = T5Config(vocab_size=len(tok), d_model=args.d_model, d_ff=4 * args.d_model, d_kv=64,
                   num_heads=max(1, args.d_model // 64), num_layers=args.layers, num_decoder_layers=args.layers,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id, dropout_rate=0.0)

    def fresh():
        torch.manual_seed(0)
        m = T5ForConditionalGeneration(cfg).train()
        return m, torch.optim.AdamW(m.parameters(), lr=1e-4)

    # Padded baseline: random batches, dynamic padding.
    collate = DataCollatorForSeq2Seq(tok, model=None, padding=True)
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    padded_batches = [collate([{"input_ids": examples[i][0], "labels": examples[i][1]} for i in order[k:k + args.batch]])
                      for k in range(0, len(order), args.batch)]
    model, opt = fresh()

    def padded_step(b):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        return int(b["attention_mask"].sum() + (b["labels"] != -100).sum())

    pad_tps, pad_fill = run(padded_step, padded_batches, args.steps,
                            lambda b: b["input_ids"].numel() + b["labels"].numel())

    # Packed: the same examples in rows of MAX_SRC/MAX_TGT tokens.
    rows = plan_rows([(len(s), len(t)) for s, t in examples], MAX_SRC, MAX_TGT)
    random.Random(1).shuffle(rows)
    per_step = args.rows or max(1, round(len(rows) * args.batch / len(examples)))
    packed_batches = [pack(examples, rows[k:k + per_step], tok.pad_token_id, tok.pad_token_id)
                      for k in range(0, len(rows), per_step)]
    model, opt = fresh()

    def packed_step(b):
        loss = per_example_loss(packed_forward(model, b), b, len(examples))
        n = sum(len(r) for r in b.examples)
        (loss.sum() / n).backward()
        opt.step()
        opt.zero_grad()
        return int((b.enc_segments > 0).sum() + (b.dec_segments > 0).sum())

    pack_tps, pack_fill = run(packed_step, packed_batches, args.steps,
                              lambda b: b.input_ids.numel() + b.labels.numel())
    print(f"model: T5 d_model {args.d_model}, {args.layers}+{args.layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, fp32, {torch.get_num_threads()} threads")
    print(f"data: {len(examples)} DialogSum+SAMSum examples, T5 tokenizer, {len(rows)} packed rows "
          f"({len(examples) / len(rows):.2f} examples/row)")
    print("| mode | non-pad tokens/s | share of computed tokens that are real |\n|---|---|---|")
    print(f"| padded ({args.batch} examples/step, dynamic padding) | {pad_tps:,.0f} | {pad_fill:.1%} |")
    print(f"| packed ({per_step} rows/step of {MAX_SRC}/{MAX_TGT}) | {pack_tps:,.0f} | {pack_fill:.1%} |")
    print(f"speed-up: {pack_tps / pad_tps:.2f}x (goal >= 1.8x)   command: python benchmarks/packing_throughput.py "
          + " ".join(sys.argv[1:]))


def run(step, batches, steps: int, computed) -> tuple[float, float]:
    """Non-pad tokens/s over `steps` steps after 2 warm-up steps, and the real share of computed tokens."""
    for b in batches[:2]:
        step(b)
    real = total = 0
    start = time.perf_counter()
    for b in batches[2:2 + steps]:
        real += step(b)
        total += computed(b)
    return real / (time.perf_counter() - start), real / total


if __name__ == "__main__":
    main()
