"""Evaluation generation (length-sorted batches) vs a naive per-example `generate` loop: summaries/s.

    python benchmarks/generation_throughput.py [--shape small|base|tiny] [--examples 64] [--batch 32]
                                               [--beams 1] [--max-new-tokens 64] [--max-source-length 384]
                                               [--data dialogsum|sample] [--dtype auto|float32|bfloat16]
                                               [--naive-dtype float32|same] [--threads N] [--json]

Same run, same weights, same inputs for both:
- model: a randomly initialised T5 (seed 0) shaped like flan-t5-small (default), flan-t5-base, or the
  project's tiny config, with the real T5 tokenizer from ../shared/models/t5-tokenizer;
- inputs: the first --examples DialogSum test dialogues in the summarization eval template (sum-01),
  or with --data sample the project's generated chat logs (pipelines/sample_data.py);
- naive: one `model.generate` per example, fp32 (the model as loaded; --naive-dtype same gives it the
  batched side's dtype, for a like-for-like agreement check on a GPU);
- ours: `components.common.generation.generate` (length-sorted batches of --batch, bf16 on a GPU).
A random model emits EOS at arbitrary points, so both sides are forced to generate exactly
--max-new-tokens tokens (`min_new_tokens` in the model's generation config): the figure measures
throughput, not how early a random model stops. Each side first generates --warmup examples untimed.
The outputs are compared string by string: with greedy search in the same dtype they should agree,
up to rare argmax flips from padded batches' different matmul shapes. The two sides are interleaved
batch by batch (the naive loop runs a batch's examples, then generate runs that batch) so that load
from other processes falls on both alike. Without --json a table is printed; with --json one JSON object.
On a shared CPU machine pass --threads 1: with more OpenMP threads than free cores, every op waits for
a descheduled thread, which slows the naive loop's many tiny batch-1 ops most and inflates the speed-up.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TOKENIZER = SHARED / "models" / "t5-tokenizer"
DIALOGSUM_TEST = SHARED / "datasets" / "dialogsum" / "dialogsum.test.jsonl"
os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported; bars would interleave with the table

import torch  # noqa: E402

from components.common.generation import (GenerationSettings, generate, generation_dtype,  # noqa: E402
                                           length_sorted_batches, pick_device)

# flan-t5-small and flan-t5-base as published (gated-GELU, untied output layer); tiny = TinyModelConfig.
SHAPES = {
    "small": dict(d_model=512, d_ff=1024, d_kv=64, num_heads=6, num_layers=8, num_decoder_layers=8,
                  feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "tiny": dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=2),
}
PROMPT = "Summarize this dialogue:\n{dialogue}"  # the summarization eval template, sum-01 in registry.yaml


def load_texts(source: str, n: int) -> list[str]:
    if source == "sample":
        from pipelines.sample_data import generate as sample_chats

        return [PROMPT.format(dialogue="\n".join(f"{m['role'].title()}: {m['content']}" for m in c["messages"]))
                for c in sample_chats(n, seed=3)]
    if not DIALOGSUM_TEST.exists():
        raise SystemExit(f"{DIALOGSUM_TEST} is absent: use --data sample")
    rows = [json.loads(line) for line in DIALOGSUM_TEST.open()][:n]
    if len(rows) < n:
        raise SystemExit(f"DialogSum test has {len(rows)} dialogues; asked for {n}")
    return [PROMPT.format(dialogue=r["dialogue"]) for r in rows]


def build_model(shape: str, tok, max_new_tokens: int):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id, dropout_rate=0.0, **SHAPES[shape])
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).eval()
    model.generation_config.min_new_tokens = max_new_tokens  # read by both sides' generate calls
    return model


def naive_generate(model, tok, texts: list[str], s: GenerationSettings, device: torch.device) -> tuple[list[str], int]:
    """One generate call per example, as a first evaluation script would; also returns the new tokens."""
    outputs, new_tokens = [], 0
    beam = {"num_beams": s.num_beams, "early_stopping": True} if s.num_beams > 1 else {"num_beams": 1}
    with torch.inference_mode():
        for text in texts:
            enc = tok(text, truncation=True, max_length=s.max_source_length, return_tensors="pt").to(device)
            out = model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=False, **beam)
            new_tokens += out.shape[1] - 1  # minus the decoder start token
            outputs.append(tok.decode(out[0], skip_special_tokens=True).strip())
    return outputs, new_tokens


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="ours: examples per generate call")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=64, help="every summary is exactly this long")
    p.add_argument("--max-source-length", type=int, default=384)
    p.add_argument("--data", choices=["dialogsum", "sample"], default="dialogsum")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="ours: auto = bf16 on a GPU that supports it, else fp32")
    p.add_argument("--naive-dtype", choices=["float32", "same"], default="float32")
    p.add_argument("--warmup", type=int, default=4, help="untimed examples per side first")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not TOKENIZER.exists():
        raise SystemExit(f"{TOKENIZER} is absent (the real T5 tokenizer lives in ../shared)")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    texts = load_texts(args.data, args.examples)
    settings = GenerationSettings(args.batch, args.beams, args.max_new_tokens, args.max_source_length,
                                  None if args.dtype == "auto" else args.dtype)
    device = pick_device()
    ours_dtype = generation_dtype(device, settings.dtype)
    naive_dtype = ours_dtype if args.naive_dtype == "same" else torch.float32

    ours_model = build_model(args.shape, tok, args.max_new_tokens)
    naive_model = copy.deepcopy(ours_model).to(device, dtype=naive_dtype)
    params = sum(p.numel() for p in ours_model.parameters()) / 1e6
    warm = texts[:args.warmup]
    naive_generate(naive_model, tok, warm, settings, device)
    generate(ours_model, tok, warm, settings)  # also moves ours to the device and its dtype
    # Interleaved by batch, so that load from other processes falls on both sides alike: for each of
    # our length-sorted batches, the naive loop runs its examples, then generate runs them as one batch
    # (the same batch a single generate call over all texts would form).
    source_tokens = [len(ids) for ids in tok(texts, truncation=True, max_length=args.max_source_length)["input_ids"]]
    naive_out, ours_out = [""] * len(texts), [""] * len(texts)
    naive_s = ours_s = 0.0
    naive_tokens = 0
    load_before = os.getloadavg()[0]
    for idx in length_sorted_batches(source_tokens, args.batch):
        batch = [texts[i] for i in idx]
        (outs, new), seconds = timed(lambda: naive_generate(naive_model, tok, batch, settings, device))
        naive_s, naive_tokens = naive_s + seconds, naive_tokens + new
        ours, seconds = timed(lambda: generate(ours_model, tok, batch, settings))
        ours_s += seconds
        for i, a, b in zip(idx, outs, ours):
            naive_out[i], ours_out[i] = a, b
    load_after = os.getloadavg()[0]

    n = len(texts)
    agree = sum(a == b for a, b in zip(naive_out, ours_out)) / n
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "shape": args.shape, "params_m": round(params, 1), "data": args.data, "examples": n,
        "mean_source_tokens": round(sum(source_tokens) / n, 1), "max_source_tokens": max(source_tokens),
        "batch_size": args.batch, "num_beams": args.beams, "max_new_tokens": args.max_new_tokens,
        "naive_new_tokens_per_summary": naive_tokens / n,
        "naive": {"dtype": str(naive_dtype).removeprefix("torch."), "seconds": naive_s, "summaries_per_s": n / naive_s},
        "ours": {"dtype": str(ours_dtype).removeprefix("torch."), "seconds": ours_s, "summaries_per_s": n / ours_s},
        "speedup": naive_s / ours_s, "goal": 3.0, "agreement": agree,
        "load_average": [load_before, load_after],
        "command": "python benchmarks/generation_throughput.py " + " ".join(sys.argv[1:]),
    }
    if args.json:
        print(json.dumps(result))
        return
    search = "greedy" if args.beams == 1 else f"beam search ({args.beams} beams)"
    print(f"model: T5 shaped {args.shape}, {params:.1f} M params, random init (seed 0); device {result['device']}")
    print(f"data: {n} {args.data} inputs, {result['mean_source_tokens']} source tokens on average "
          f"(max {result['max_source_tokens']}); {search}, exactly {args.max_new_tokens} new tokens per summary "
          f"(naive measured {result['naive_new_tokens_per_summary']:.1f}); {args.warmup} warm-up examples per side")
    print("| method | dtype | summaries/s | seconds |\n|---|---|---|---|")
    print(f"| naive loop (1 generate per example) | {result['naive']['dtype']} "
          f"| {result['naive']['summaries_per_s']:.2f} | {naive_s:.1f} |")
    print(f"| generation.generate (length-sorted batches of {args.batch}) | {result['ours']['dtype']} "
          f"| {result['ours']['summaries_per_s']:.2f} | {ours_s:.1f} |")
    verdict = "met" if result["speedup"] >= 3 else "NOT met"
    print(f"speed-up: {result['speedup']:.2f}x (goal >= 3x: {verdict}); identical outputs: {agree:.1%} "
          f"({'same dtype' if naive_dtype == ours_dtype else 'different dtypes'}); "
          f"load average {load_before:.2f} -> {load_after:.2f}")
    print("command: " + result["command"])


if __name__ == "__main__":
    main()
