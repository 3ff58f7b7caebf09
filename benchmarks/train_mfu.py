"""Training throughput and MFU, packed vs padded, on a flan-t5-base-shaped model (random init).

    python benchmarks/train_mfu.py [--shape flan-t5-base] [--device auto] [--precision auto]
                                   [--batch 32] [--rows 0] [--steps 20] [--attn sdpa]
                                   [--packed-attention segments] [--out result.json]
    python benchmarks/train_mfu.py --save-tokens tokens.npz    # tokenize here, carry the file to a GPU box
    python benchmarks/train_mfu.py --tokens tokens.npz ...     # run without ../shared or a tokenizer

Data: DialogSum + SAMSum dialogues -> summaries, real 32k T5 tokenizer, inputs <= 512 tokens, targets
<= 128 (packing_throughput.load_pairs), in one shuffled order for both modes:
- padded: --batch examples per step, padded to the longest in the batch (batches.collate and
  batches.seq2seq_loss, the train step's padded path);
- packed: rows of 512/128 tokens filled online from the same stream (packing.fill_rows, as training
  packs), --rows rows per step (0 = the padded mode's tokens per step), with per-segment attention
  (components/train/segment_attention.py; --packed-attention dense: row x row block-diagonal masks
  through the --attn implementation, as before).
Both start from the same weights; the steps alternate padded/packed, so load hits both alike.
Precision: bf16 on a GPU (weights, activations and AdamW state in bf16, as DeepSpeed's bf16 mode
computes; it also keeps fp32 master weights, which costs memory, not matmul time), fp32 on CPU.
Reported per mode: real (non-pad) tokens/s; model TFLOP/s from components/train/flops.py (each
example priced alone and unpadded, training = 3 x forward); MFU = model TFLOP/s / the device's dense
peak (--peak-tflops, else a known GPU's bf16 peak); and the TFLOP/s of what the device actually
computed (every padded position; for packed rows, all of a row's attention with dense masks, or each
example's tile with per-segment attention), which shows where the rest goes. Goal (issue 4): MFU >= 40 % on a GPU.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from components.train import flops  # noqa: E402
from components.train.batches import collate, seq2seq_loss  # noqa: E402
from components.train.packing import fill_rows, pack_examples, packed_forward, to_device, token_loss  # noqa: E402
from components.train.segment_attention import tile_length  # noqa: E402

MAX_SRC, MAX_TGT, PAD = 512, 128, 0
# google/flan-t5-* shapes (config.json of each): T5 v1.1 with gated GELU, untied head, 32128 ids
SHAPES = {
    "flan-t5-small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
    "flan-t5-base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
    "flan-t5-large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16),
    "tiny": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4),  # tests
}


def save_tokens(path: Path, examples: list[tuple[list[int], list[int]]]) -> None:
    src, tgt = [s for s, _ in examples], [t for _, t in examples]
    np.savez_compressed(path, src=np.concatenate(src).astype(np.int32), tgt=np.concatenate(tgt).astype(np.int32),
                        src_len=np.array([len(s) for s in src], np.int32), tgt_len=np.array([len(t) for t in tgt], np.int32))


def load_tokens(path: Path) -> list[tuple[list[int], list[int]]]:
    z = np.load(path)
    src = np.split(z["src"], np.cumsum(z["src_len"])[:-1])
    tgt = np.split(z["tgt"], np.cumsum(z["tgt_len"])[:-1])
    return [(s.tolist(), t.tolist()) for s, t in zip(src, tgt)]


def tokenize(n: int) -> list[tuple[list[int], list[int]]]:
    from transformers import AutoTokenizer

    from packing_throughput import SHARED, load_pairs

    tok = AutoTokenizer.from_pretrained(SHARED / "models" / "t5-tokenizer")
    pairs = load_pairs(n, 0)
    src = tok([a for a, _ in pairs], truncation=True, max_length=MAX_SRC)["input_ids"]
    tgt = tok([b for _, b in pairs], truncation=True, max_length=MAX_TGT)["input_ids"]
    return list(zip(src, tgt))


def build_model(shape: str, dtype: torch.dtype, device: torch.device, attn: str):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                   pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=PAD, dropout_rate=0.1, **SHAPES[shape])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration._from_config(cfg, attn_implementation=attn)
    # FLAN-T5's head is its own matrix; transformers 5 ties every T5 built from a config (checkpoints
    # with a distinct head load untied), so untie it: flan-t5-base then has its 247.6 M parameters.
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model.to(device=device, dtype=dtype).train()


def make_batches(examples, batch: int, rows: int, steps: int):
    """`steps` padded batches of `batch` examples and `steps` packed batches of `rows` rows, from one
    shuffled stream each (the packed stream wraps around if the rows outrun the data)."""
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    padded = [collate([examples[i] for i in order[k * batch:(k + 1) * batch]], PAD) for k in range(steps)]
    if len(order) < steps * batch:
        raise SystemExit(f"{len(order)} examples are too few for {steps} steps of {batch}: raise --examples")
    # what fill_rows reads of a loader Example (the loader itself needs boto3, which a bare GPU box lacks)
    stream = (SimpleNamespace(key=i, input_ids=examples[i][0], labels=examples[i][1]) for _ in range(100) for i in order)
    packed, pending = [], []
    for _ in range(steps):
        got, pending = fill_rows(lambda: next(stream), pending, rows, MAX_SRC, MAX_TGT)
        packed.append(pack_examples(got, PAD, PAD))
    return padded, packed


def computed_moments(batch, packed: bool, attention: str = "segments") -> flops.Moments:
    """What the device computes: the dense layers on every row position, padding included; attention on a
    padded row whole, on a packed row whole with dense masks, and per tile with per-segment attention (each
    example's lengths rounded up to the tile size, segment_attention.build_layout's shapes)."""
    ids = batch.input_ids if packed else batch["input_ids"]
    tgt = batch.labels if packed else batch["labels"]
    b, src_len, tgt_len = ids.shape[0], ids.shape[1], tgt.shape[1]
    rows = flops.Moments.of(torch.full((b,), src_len), torch.full((b,), tgt_len))
    if not packed or attention == "dense":
        return rows
    src, tgt = (torch.tensor([tile_length(int(n), cap) for n in lengths], dtype=torch.float64)
                for lengths, cap in zip(flops.example_lengths(batch), (src_len, tgt_len)))
    return flops.Moments(rows.src, rows.tgt, float((src * src).sum()), float((tgt * tgt).sum()),
                         float((src * tgt).sum()))


def step_fn(model, opt, device, packed: bool, attention: str = "segments"):
    def step(batch):
        if packed:
            b = to_device(batch, device)
            loss = token_loss(packed_forward(model, b, attention, targets_only=True), b)
        else:
            loss = seq2seq_loss(model, model, {k: v.to(device) for k, v in batch.items()})  # the train step's loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    examples = load_tokens(args.tokens) if args.tokens else tokenize(args.examples)
    examples = examples[:args.examples]
    mean_tokens = sum(len(s) + len(t) for s, t in examples) / len(examples)
    rows = args.rows or max(1, round(args.batch * mean_tokens / (MAX_SRC + MAX_TGT) / 0.9))  # rows ~90 % full
    n = args.warmup + args.steps
    batches = dict(zip(("padded", "packed"), make_batches(examples, args.batch, rows, n)))
    models = {}
    for mode in batches:  # same initial weights for both
        model = build_model(args.shape, dtype, device, args.attn)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        if args.compile:  # the stacks, not the model: packed_forward calls the encoder on its own
            model.encoder, model.decoder = (torch.compile(m, dynamic=True) for m in (model.encoder, model.decoder))
        models[mode] = (model, step_fn(model, opt, device, mode == "packed", args.packed_attention))
    fm = flops.flop_model(models["padded"][0])
    peak = args.peak_tflops or flops.device_peak_tflops(device, precision, None)
    stats = {m: {"seconds": 0.0, "real": 0, "computed": 0, "flops": 0.0, "hw_flops": 0.0} for m in batches}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(n):
        for mode, (_, step) in models.items():
            b, packed = batches[mode][i], mode == "packed"
            sync(device)
            start = time.perf_counter()
            loss = step(b)
            sync(device)
            if i < args.warmup:
                continue
            s = stats[mode]
            s["seconds"] += time.perf_counter() - start
            m = flops.batch_moments(b, packed, causal=False)
            s["real"] += int(m.src + m.tgt)
            computed = computed_moments(b, packed, args.packed_attention)
            s["computed"] += int(computed.src + computed.tgt)
            s["flops"] += fm.train(m)
            s["hw_flops"] += fm.train(computed)
            s["loss"] = float(loss.detach())
    out = {"shape": args.shape, "params_m": sum(p.numel() for p in models["padded"][0].parameters()) / 1e6,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "precision": precision, "attn": args.attn, "packed_attention": args.packed_attention, "compile": args.compile, "examples": len(examples),
           "batch": args.batch, "rows": rows, "steps": args.steps, "warmup": args.warmup, "peak_tflops": peak,
           "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
           "modes": {}}
    for mode, s in stats.items():
        tflops = s["flops"] / s["seconds"] / 1e12
        out["modes"][mode] = {
            "tokens_per_second": s["real"] / s["seconds"], "real_share": s["real"] / s["computed"],
            "model_tflops": tflops, "mfu": tflops / peak if peak else None,
            "computed_tflops": s["hw_flops"] / s["seconds"] / 1e12, "seconds": s["seconds"], "last_loss": s["loss"]}
    out["packed_over_padded"] = out["modes"]["packed"]["tokens_per_second"] / out["modes"]["padded"]["tokens_per_second"]
    return out


def report(r: dict) -> str:
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    lines = [f"model: {r['shape']} shape, random init, {r['params_m']:.1f} M params, {r['precision']}, attention {r['attn']}"
             f"{', torch.compile' if r['compile'] else ''}; device: {r['device']}; peak {r['peak_tflops'] or 'unknown'}"
             f"{' TFLOP/s' if r['peak_tflops'] else ''}",
             f"data: {r['examples']} DialogSum+SAMSum examples; padded {r['batch']} examples/step, packed {r['rows']} rows "
             f"of {MAX_SRC}/{MAX_TGT}/step; {r['warmup']} warm-up + {r['steps']} timed steps per mode, alternating"
             + (f"; peak memory {r['max_memory_gib']:.1f} GiB" if r["max_memory_gib"] is not None else ""),
             "| mode | real tokens/s | real share | model TFLOP/s | MFU | computed TFLOP/s |", "|---|---|---|---|---|---|"]
    for mode, m in r["modes"].items():
        lines.append(f"| {mode} | {m['tokens_per_second']:,.0f} | {m['real_share']:.1%} | {m['model_tflops']:.3g} | "
                     f"{pct(m['mfu'])} | {m['computed_tflops']:.3g} |")
    best = max((m["mfu"] or 0) for m in r["modes"].values())
    lines.append(f"packed/padded real tokens/s: {r['packed_over_padded']:.2f}x; best MFU {pct(best if r['peak_tflops'] else None)}"
                 f" (goal >= 40 % on a GPU: {'met' if best >= 0.4 else 'not met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="flan-t5-base")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="Hugging Face attention implementation")
    p.add_argument("--packed-attention", choices=["segments", "dense"], default="segments",
                   help="packed rows: per-segment tiles, or dense row x row masks through --attn")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder stacks "
                   "(dynamic shapes; raise --warmup so compilation stays out of the timed steps)")
    p.add_argument("--examples", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32, help="padded: examples per step")
    p.add_argument("--rows", type=int, default=0, help="packed: rows per step (0 = about the padded tokens per step)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU (default: known GPUs)")
    p.add_argument("--tokens", type=Path, help="read tokenized examples from this .npz (see --save-tokens)")
    p.add_argument("--save-tokens", type=Path, help="tokenize --examples pairs, write them here, and stop")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.save_tokens:
        examples = tokenize(args.examples)
        save_tokens(args.save_tokens, examples)
        print(f"wrote {len(examples)} examples to {args.save_tokens} ({args.save_tokens.stat().st_size / 2**20:.1f} MiB)")
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    result = run(args)
    result["command"] = "python benchmarks/train_mfu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(report(result))
    print("command: " + result["command"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
