"""Packed vs padded seq2seq training throughput (non-pad tokens/s), same model, same data, same run.

    python benchmarks/packing_throughput.py [--examples 2000] [--steps 20] [--d-model 256] [--layers 4]
                                            [--shape flan-t5-small] [--group-by-length]

Data: DialogSum + SAMSum dialogues -> summaries, tokenized with the real T5 tokenizer in ../shared
(inputs truncated to 512 tokens, targets to 128). Model: a randomly initialised T5 of the given shape,
the same initial weights (seed 0) and a fresh torch AdamW (same lr, constant) for each of three modes:
- trainer: Hugging Face `Seq2SeqTrainer` with `DataCollatorForSeq2Seq` (dynamic padding to the longest
  example of each batch), --batch examples per step, no eval, no saving, no reporting, no clipping, CPU;
  by default it reads the same shuffled order as the loop below (so the same batches), with
  --group-by-length its `LengthGroupedSampler` instead;
- padded loop: the same collator and batches in a plain forward/backward/AdamW loop (a reference
  without Trainer overhead);
- packed: the same examples packed into rows of 512/128 tokens (components/train/packing.py), batches
  of --rows rows (default: the same tokens per step), the same loop, with per-segment attention
  (components/train/segment_attention.py: each example attends only within itself);
- packed, dense masks: the same packed batches with row x row attention and block-diagonal masks
  (the packed mode before per-segment attention), to show what skipping other examples is worth.
  By default the rows are filled as training fills them: `fill_rows`, online first-fit over the
  same shuffled stream, leftovers carried to the next step (--packer online). --packer offline plans
  every row up front with `plan_rows` (windowed first-fit decreasing): denser, but training cannot
  use it, since the loader streams examples.
The modes are interleaved: after each Trainer step a callback runs one step of each other mode, each
timed on its own, so that load from other processes falls on all three alike. Each mode
trains `--warmup` untimed steps, then `--steps` timed steps. Throughput counts only real (non-pad)
source + target tokens.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

import torch  # noqa: E402

from components.train.packing import (fill_rows, pack, pack_examples, packed_forward,  # noqa: E402
                                      plan_rows, token_loss)

MAX_SRC, MAX_TGT = 512, 128
LR = 1e-4


def load_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    ds = SHARED / "datasets"
    pairs = [(r["dialogue"], r["summary"]) for r in map(json.loads, (ds / "dialogsum" / "dialogsum.train.jsonl").open())]
    pairs += [(r["dialogue"], r["summary"]) for r in json.loads((ds / "samsum" / "train.json").read_text())
              if r["dialogue"].strip() and r["summary"].strip()]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def padded_counts(b) -> tuple[int, int]:
    """(real, computed) source + target tokens of a dynamically padded batch."""
    real = int(b["attention_mask"].sum() + (b["labels"] != -100).sum())
    return real, b["input_ids"].numel() + b["labels"].numel()


class Meter:
    """Real tokens, computed tokens and seconds over the timed steps of one mode."""

    def __init__(self):
        self.real = self.total = 0
        self.seconds = 0.0

    def timed(self, step, i: int, warmup: int) -> None:
        start = time.perf_counter()
        real, total = step(i)
        if i >= warmup:
            self.seconds += time.perf_counter() - start
            self.real, self.total = self.real + real, self.total + total

    def row(self) -> tuple[float, float]:
        return self.real / self.seconds, self.real / self.total


def padded_step(model, opt, batches):
    def step(i):
        b = batches[i]
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        opt.step()
        opt.zero_grad()
        return padded_counts(b)

    return step


def packed_step(model, opt, batches, attention: str = "segments"):
    def step(i):
        b = batches[i]
        # the train step's loss: mean over target tokens, the LM head on those tokens only
        token_loss(packed_forward(model, b, attention, targets_only=True), b).backward()
        opt.step()
        opt.zero_grad()
        return int((b.enc_segments > 0).sum() + (b.dec_segments > 0).sum()), b.input_ids.numel() + b.labels.numel()

    return step


class Ex:
    """An example as the loader yields it (fill_rows reads .input_ids, .labels and .key)."""

    def __init__(self, key: int, input_ids: list[int], labels: list[int]):
        self.key, self.input_ids, self.labels = key, input_ids, labels


def online_batches(examples, order: list[int], per_step: int, steps: int, pad_id: int):
    """`steps` batches of per_step rows, filled by fill_rows from the shuffled stream as training does."""
    stream = iter([Ex(i, *examples[i]) for i in order])
    batches, pending, packed = [], [], 0
    for _ in range(steps):
        rows, pending = fill_rows(lambda: next(stream), pending, per_step, MAX_SRC, MAX_TGT)
        batches.append(pack_examples(rows, pad_id, pad_id))
        packed += sum(len(r) for r in rows)
    return batches, packed / (steps * per_step)


def seq2seq_trainer(model, opt, tok, features: list[dict], batch: int, warmup: int, steps: int,
                    group_by_length: bool, others: list[tuple[Meter, object]]) -> dict:
    """Train Hugging Face Seq2SeqTrainer on `features` (already in the loop's shuffled order); after its
    step g, run step g-1 of each of `others` ((meter, step) pairs), outside the Trainer's clock."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    return hf_trainer(Seq2SeqTrainer, Seq2SeqTrainingArguments, DataCollatorForSeq2Seq(tok, model=None, padding=True),
                      model, opt, tok, features, batch, warmup, steps, group_by_length, others)


def hf_trainer(trainer_cls, args_cls, collate, model, opt, tok, features: list[dict], batch: int, warmup: int,
               steps: int, group_by_length: bool, others: list[tuple[Meter, object]], counts=padded_counts) -> dict:
    """A stock Hugging Face Trainer (or Seq2SeqTrainer) with `collate`, interleaved with `others`;
    counts(batch) -> (real, computed) tokens."""
    from transformers import PrinterCallback, TrainerCallback

    seen: list[tuple[int, int, float]] = []  # (real, computed, collate s) per batch, in the order trained

    def counting_collate(rows):
        t = time.perf_counter()
        b = collate(rows)
        seen.append((*counts(b), time.perf_counter() - t))
        return b

    clock = {"seconds": 0.0}

    class Interleave(TrainerCallback):
        """Trainer time of step g: from the end of this callback at step g-1 to its start at step g
        (data loading, forward, backward, optimizer, scheduler and Trainer bookkeeping included)."""

        def on_train_begin(self, args, state, control, **kw):
            clock["back"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step > warmup:
                clock["seconds"] += time.perf_counter() - clock["back"]
            for meter, step in others:
                meter.timed(step, state.global_step - 1, warmup)
            clock["back"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        targs = args_cls(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=batch,
            gradient_accumulation_steps=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=0.0,  # the loops do not clip either: leaving clipping out only favours the Trainer
            train_sampling_strategy="group_by_length" if group_by_length else "sequential",
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
            dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False,
            use_cpu=True, disable_tqdm=True, seed=0)
        trainer = trainer_cls(model=model, args=targs, data_collator=counting_collate, train_dataset=features,
                              processing_class=tok, optimizers=(opt, None), callbacks=[Interleave()])
        trainer.remove_callback(PrinterCallback)  # it would print the final train metrics amid the table
        trainer.train()
    timed = seen[warmup:warmup + steps]  # the collator may run one batch ahead: the order is what counts
    real, total = sum(r for r, _, _ in timed), sum(c for _, c, _ in timed)
    return {"tps": real / clock["seconds"], "fill": real / total, "seen": [(r, c) for r, c, _ in seen],
            "collate_share": sum(s for _, _, s in timed) / clock["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode before the timed ones")
    p.add_argument("--batch", type=int, default=16, help="trainer and padded loop: examples per step")
    p.add_argument("--rows", type=int, default=0, help="packed: rows per step (0 = same tokens per step)")
    p.add_argument("--packer", choices=["online", "offline"], default="online",
                   help="online: fill_rows over the stream, as training does; offline: plan_rows up front")
    p.add_argument("--group-by-length", action="store_true",
                   help="trainer: LengthGroupedSampler (train_sampling_strategy='group_by_length')")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--shape", choices=["custom", "flan-t5-small"], default="custom",
                   help="flan-t5-small: that model's shape (gated GELU, untied head) instead of --d-model/--layers")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(SHARED / "models" / "t5-tokenizer")
    pairs = load_pairs(args.examples, 0)
    src = tok([a for a, _ in pairs], truncation=True, max_length=MAX_SRC)["input_ids"]
    tgt = tok([b for _, b in pairs], truncation=True, max_length=MAX_TGT)["input_ids"]
    examples = list(zip(src, tgt))
    shape = dict(d_model=args.d_model, d_ff=4 * args.d_model, d_kv=64, num_heads=max(1, args.d_model // 64),
                 num_layers=args.layers, num_decoder_layers=args.layers)
    if args.shape == "flan-t5-small":  # google/flan-t5-small's config.json, randomly initialised
        shape = dict(d_model=512, d_ff=1024, d_kv=64, num_heads=6, num_layers=8, num_decoder_layers=8,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    cfg = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id, dropout_rate=0.0, **shape)

    def fresh():
        torch.manual_seed(0)
        m = T5ForConditionalGeneration(cfg).train()
        return m, torch.optim.AdamW(m.parameters(), lr=LR)

    # One shuffled order for the trainer and the padded loop; batches of --batch examples.
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    features = [{"input_ids": examples[i][0], "labels": examples[i][1]} for i in order]
    collate = DataCollatorForSeq2Seq(tok, model=None, padding=True)
    padded_batches = [collate(features[k:k + args.batch]) for k in range(0, len(features), args.batch)]
    # Packed: the same examples in rows of MAX_SRC/MAX_TGT tokens. The offline plan also sets the
    # default rows per step (the trainer's tokens per step) for both packers.
    rows = plan_rows([(len(s), len(t)) for s, t in examples], MAX_SRC, MAX_TGT)
    per_step = args.rows or max(1, round(len(rows) * args.batch / len(examples)))
    w, n = args.warmup, args.steps
    if args.packer == "offline":
        random.Random(1).shuffle(rows)
        packed_batches = [pack(examples, rows[k:k + per_step], tok.pad_token_id, tok.pad_token_id)
                          for k in range(0, len(rows), per_step)]
        examples_per_row = len(examples) / len(rows)
    else:
        packed_batches, examples_per_row = online_batches(examples, order, per_step, w + n, tok.pad_token_id)
    if min(len(padded_batches), len(packed_batches)) < w + n:
        raise SystemExit(f"too few batches for {w}+{n} steps: raise --examples")

    loop, packed, dense = Meter(), Meter(), Meter()
    trainer = seq2seq_trainer(*fresh(), tok, features, args.batch, w, n, args.group_by_length,
                              [(loop, padded_step(*fresh(), padded_batches)),
                               (packed, packed_step(*fresh(), packed_batches)),
                               (dense, packed_step(*fresh(), packed_batches, "dense"))])
    (loop_tps, loop_fill), (pack_tps, pack_fill), (dense_tps, _) = loop.row(), packed.row(), dense.row()

    same = [padded_counts(b) for b in padded_batches[:w + n]] == trainer["seen"][:w + n]
    sampler = "LengthGroupedSampler" if args.group_by_length else "the loop's shuffled order"
    model = fresh()[0]
    print(f"model: T5 {args.shape + ' ' if args.shape != 'custom' else ''}d_model {cfg.d_model}, "
          f"{cfg.num_layers}+{cfg.num_decoder_layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, fp32, {torch.get_num_threads()} threads")
    print(f"data: {len(examples)} DialogSum+SAMSum examples, T5 tokenizer; packed rows by {args.packer} packing, "
          f"{examples_per_row:.2f} examples/row; {w} warm-up + {n} timed steps per mode, interleaved; "
          f"AdamW lr {LR:g} constant, no clipping")
    print(f"trainer batches identical to the padded loop's: {same} ({sampler}); "
          f"collation is {trainer['collate_share']:.2%} of the trainer's timed wall time")
    print("| mode | non-pad tokens/s | share of computed tokens that are real |\n|---|---|---|")
    print(f"| Seq2SeqTrainer ({args.batch} examples/step, DataCollatorForSeq2Seq, {sampler}) "
          f"| {trainer['tps']:,.0f} | {trainer['fill']:.1%} |")
    print(f"| padded loop ({args.batch} examples/step, same collator) | {loop_tps:,.0f} | {loop_fill:.1%} |")
    print(f"| packed ({per_step} rows/step of {MAX_SRC}/{MAX_TGT}, per-segment attention) | {pack_tps:,.0f} "
          f"| {pack_fill:.1%} |")
    print(f"| packed, dense row x row masks (same rows) | {dense_tps:,.0f} | {pack_fill:.1%} |")
    goal = 1.15 if args.group_by_length else 2.0
    ratio = pack_tps / trainer["tps"]
    print(f"speed-up packed/Seq2SeqTrainer: {ratio:.2f}x (goal >= {goal}x with {sampler}: "
          f"{'MET' if ratio >= goal else 'NOT MET'}); packed/packed dense: {pack_tps / dense_tps:.2f}x; "
          f"packed/padded loop: {pack_tps / loop_tps:.2f}x; padded loop/Seq2SeqTrainer: {loop_tps / trainer['tps']:.2f}x")
    print("command: python benchmarks/packing_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
