"""One training rank: `python -m components.train.worker --job job.json`, started by torchrun.

Every rank reads the train shards, takes its share of each epoch's shuffled order, and steps a
DeepSpeed engine; rank 0 logs to MLflow, shows progress, and saves + uploads the model.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from tqdm import tqdm

from components.common.config import MixtuneConfig
from components.common.storage import COMPLETE_MARKER, Store, join
from components.train import model as model_lib
from components.train import packing

# -- data ----------------------------------------------------------------------------------------


def load_examples(files: list[str]) -> list[tuple[list[int], list[int]]]:
    examples = []
    for f in files:
        table = pq.read_table(f, columns=["input_ids", "labels"])
        examples += zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist())
    return examples


def rank_batches(n: int, micro: int, rank: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's micro-batches for one epoch, like DistributedSampler: one shuffled order shared by
    all ranks (same seed), padded by wrapping so every rank gets the same number of batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    order += order[: (-n) % world]
    mine = order[rank::world]
    return [mine[i:i + micro] for i in range(0, len(mine), micro)]


def packed_rank_batches(rows: list[list[int]], micro: int, rank: int, world: int, seed: int,
                        epoch: int) -> list[list[list[int]]]:
    """This rank's micro-batches of packed rows (lists of example indexes): the same sharding as
    rank_batches, over rows instead of examples."""
    return [[rows[i] for i in batch] for batch in rank_batches(len(rows), micro, rank, world, seed, epoch)]


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


# -- setup ---------------------------------------------------------------------------------------


def skip_shm_allreduce() -> None:
    """Mark DeepSpeed's CPU shared-memory allreduce op unavailable, so deepspeed.comm uses plain gloo
    instead of compiling it (~50 s with g++ on first use). Initialising torch.distributed ourselves
    does not avoid that build: DeepSpeed's TorchBackend builds the op whenever it is created."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def log_metrics(client, run_id: str | None, step: int, values: dict[str, float]) -> None:
    if client is None or run_id is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# -- training ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", required=True, help="job.json written by components.train.core")
    job = json.loads(Path(parser.parse_args(argv).job).read_text())
    cfg = MixtuneConfig.model_validate(job["config"])
    tc = cfg.train
    on_cpu = job["device"] == "cpu"
    if on_cpu and not tc.cpu_shm_allreduce:
        skip_shm_allreduce()
    if on_cpu:
        # Tiny values late in training become denormals, which x86 handles many times slower.
        torch.set_flush_denormal(True)
    import deepspeed

    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu") if on_cpu else torch.device("cuda", local_rank)
    if not on_cpu:
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()

    model = model_lib.load_model(job["model_path"])
    torch.manual_seed(tc.seed + rank)  # dropout differs per rank; data order comes from tc.seed
    ds_config = job["deepspeed_config"]
    groups = model_lib.param_groups(model, tc.weight_decay)
    # Our AdamW unless a user-supplied DeepSpeed JSON names its own optimizer (which DeepSpeed builds).
    optimizer = None if "optimizer" in ds_config else torch.optim.AdamW(groups, lr=tc.learning_rate)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                           model_parameters=groups if optimizer is None else None)
    micro, max_steps = engine.train_micro_batch_size_per_gpu(), tc.max_steps

    examples = load_examples(job["train_files"])
    if not examples:
        raise ValueError("the train shards hold no rows")
    client = None
    if rank == 0:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=cfg.tracking.uri)
    history: list[dict] = []
    window = [0.0, 0.0, 0.0]  # loss sum, micro-batches, tokens since the last log
    tokens_total, epoch, step = 0.0, 0, 0
    engine.train()
    # Under KFP every redraw is a log line: redraw rarely.
    pbar = tqdm(total=max_steps, desc="train", disable=rank != 0, mininterval=10.0)
    started = window_start = time.time()
    pad, start = job["pad_token_id"], engine.module.config.decoder_start_token_id
    rows = (packing.plan_rows([(len(s), len(t)) for s, t in examples], cfg.model.max_source_length,
                              cfg.model.max_target_length) if tc.packing else None)
    while step < max_steps:
        batches = (packed_rank_batches(rows, micro, rank, world, tc.seed, epoch) if tc.packing
                   else rank_batches(len(examples), micro, rank, world, tc.seed, epoch))
        for idx in batches:
            if tc.packing:
                pb = packing.to_device(packing.pack(examples, idx, pad, start), device)
                loss = packing.token_loss(packing.packed_forward(engine, pb), pb)
                real_tokens = float((pb.enc_segments > 0).sum() + (pb.dec_segments > 0).sum())
            else:
                batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad).items()}
                loss = engine(**batch).loss
                real_tokens = float(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
            engine.backward(loss)
            engine.step()
            window[0] += loss.item()
            window[1] += 1
            window[2] += real_tokens
            if engine.global_steps == step:
                continue  # still accumulating gradients
            step = engine.global_steps
            pbar.update(1)
            if step == 1 or step % tc.log_every == 0 or step == max_steps:
                # A collective: every rank reaches it at the same step, so it cannot deadlock.
                loss_sum, micro_count, tokens = reduce_sum(window, device)
                elapsed = time.time() - window_start
                tokens_total += tokens
                entry = {"step": step, "loss": loss_sum / micro_count, "lr": engine.get_lr()[0],
                         "tokens_per_second": tokens / max(elapsed, 1e-9), "tokens_seen": tokens_total}
                history.append(entry)
                log_metrics(client, job["mlflow_run_id"], step, {  # run totals are the parent's to log
                    "loss": entry["loss"], "lr": entry["lr"], "window_tokens_per_second": entry["tokens_per_second"]})
                pbar.set_postfix(loss=f"{entry['loss']:.3f}")
                window, window_start = [0.0, 0.0, 0.0], time.time()
            if step >= max_steps:
                break
        epoch += 1
    pbar.close()
    train_seconds = time.time() - started
    save_and_upload(engine, job, cfg, rank, {
        "steps": step, "first_loss": history[0]["loss"], "final_loss": history[-1]["loss"],
        "train_seconds": train_seconds, "tokens_seen": int(tokens_total),
        "tokens_per_second": tokens_total / train_seconds, "world_size": world, "epochs_started": epoch + 1,
        "history": history,
    })
    dist.destroy_process_group()  # no barrier: other ranks need not wait for rank 0's upload


def save_and_upload(engine, job: dict, cfg: MixtuneConfig, rank: int, result: dict) -> None:
    """Consolidate the weights (ZeRO-3 shards them across ranks), save on rank 0, upload, mark done."""
    import deepspeed
    from transformers import AutoTokenizer

    work, out = Path(job["work_dir"]), job["output_uri"]
    model_dir = work / "model"
    params = list(engine.module.parameters())
    gather = engine.zero_optimization_stage() == 3
    # Every rank must enter the gather (it is a collective); only rank 0 writes.
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=gather):
        if rank == 0:
            model_lib.save_model(engine.module, AutoTokenizer.from_pretrained(job["tokenizer_path"]), model_dir)
    if rank != 0:
        return
    store = Store(cfg.storage)
    (work / "train_log.json").write_text(json.dumps(result, indent=2))
    store.put_bytes(join(out, "train_log.json"), (work / "train_log.json").read_bytes())
    store.upload_dir(model_dir, join(out, "model"))
    store.put_json(join(out, "model", COMPLETE_MARKER), {"steps": result["steps"], "final_loss": result["final_loss"]})
    (work / "result.json").write_text(json.dumps(result))  # what the parent reads back


if __name__ == "__main__":
    main()
