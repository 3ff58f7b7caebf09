"""One training rank: `python -m components.train.worker --job job.json` (or `--job-uri s3://...`),
started by torchrun locally or by Kubeflow Trainer in a cluster.

Every rank streams its share of the mixture from the shards (components/train/loader.py) and steps a
DeepSpeed engine. Every `checkpoint_every` steps, and when any rank gets SIGTERM, all ranks write a
checkpoint to S3 (components/train/checkpoint.py); a rerun resumes from the latest complete one and
continues exactly: the loader state is restored, and dropout is reseeded from (seed, rank, step).
Rank 0 logs to MLflow, shows progress, and exports the consolidated model in safetensors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from components.common.config import MixtuneConfig
from components.common.hf import local_copy
from components.common.progress import progress_line
from components.common.storage import Store
from components.train import causal_packing, checkpoint, export, flops, packing
from components.train import loader as loader_lib, model as model_lib
from components.train.batches import Batches, seq2seq_loss

SIGTERM_EXIT = 143  # 128 + SIGTERM: the conventional "terminated" status

# -- steps ---------------------------------------------------------------------------------------


def step_seed(seed: int, rank: int, step: int) -> int:
    """The RNG seed for one optimizer step on one rank: a resumed run draws the same dropout masks."""
    digest = hashlib.blake2b(f"{seed}|{rank}|{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


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


def reduce(values: list[float], device: torch.device, op=dist.ReduceOp.SUM) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def read_job(args) -> dict:
    if args.job:
        return json.loads(Path(args.job).read_text())
    # A Kubeflow Trainer pod: the endpoint and region come from its env (AWS_ENDPOINT_URL), the
    # credentials from its service account or Secret; the config inside the job names the rest.
    from components.common.config import StorageConfig
    from components.common.storage import S3Uri

    return Store(StorageConfig(bucket=S3Uri.parse(args.job_uri).bucket)).get_json(args.job_uri)


def local_refs(job: dict, store: Store, local_rank: int) -> tuple[str, str]:
    """(model, tokenizer) as local paths: s3:// ones are downloaded once per node, by local rank 0."""
    if local_rank == 0:
        refs = (local_copy(job["model_path"], store), local_copy(job["tokenizer_path"], store))
    dist.barrier()
    if local_rank != 0:
        refs = (local_copy(job["model_path"], store), local_copy(job["tokenizer_path"], store))
    return refs


# -- training ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--job", help="job.json written by components.train.core")
    where.add_argument("--job-uri", help="the same job.json in S3 (Kubeflow Trainer pods)")
    job = read_job(parser.parse_args(argv))
    cfg = MixtuneConfig.model_validate(job["config"])
    tc = cfg.train
    stop = {"term": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))  # checkpoint at the next step
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
    store = Store(cfg.storage)
    work = Path(job.get("work_dir") or tempfile.mkdtemp(prefix="mixtune-rank-"))
    model_path, tokenizer_path = local_refs(job, store, local_rank)

    causal = job.get("architecture") == "causal"
    model = model_lib.load_model(model_path, job.get("architecture", "seq2seq"))
    if tc.lora.enabled:
        from components.train import lora

        model = lora.apply_lora(model, tc.lora)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"LoRA: {lora.trainable_summary(model)}", flush=True)
    ds_config = job["deepspeed_config"]
    flop_model = flops.flop_model(model)  # before ZeRO-3 partitions the weights
    precision = "bf16" if ds_config.get("bf16", {}).get("enabled") else "fp32"
    peak = flops.device_peak_tflops(device, precision, tc.peak_tflops)
    groups = model_lib.param_groups(model, tc.weight_decay)
    # Our AdamW unless a user-supplied DeepSpeed JSON names its own optimizer (which DeepSpeed builds).
    optimizer = None if "optimizer" in ds_config else torch.optim.AdamW(groups, lr=tc.learning_rate)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                           model_parameters=groups if optimizer is None else None)
    micro, max_steps = engine.train_micro_batch_size_per_gpu(), tc.max_steps
    cache = Path(tc.loader.cache_dir or work / "shard-cache")  # shared by a node's ranks (file locks)
    loader = loader_lib.from_manifest(job["shards_manifest"], "train", store, cache, tc.loader.mixture_weights,
                                      tc.seed, rank, world, tc.loader.shuffle_block_shards)
    config = model_lib.unwrap(engine.module).config
    batches = Batches(loader, cfg, micro, job["pad_token_id"], getattr(config, "decoder_start_token_id", None),
                      causal, job.get("eos_token_id"), getattr(config, "bos_token_id", None))

    # window: loss sum, micro-batches, real tokens, model FLOPs since the last log line
    state = {"history": [], "window": [0.0] * 4, "tokens_total": 0.0, "flops_total": 0.0, "train_seconds": 0.0}
    ckpt_root, ckpt_dir = job["checkpoint_root"], work / "checkpoint"
    restored = (checkpoint.restore(engine, store, ckpt_root, ckpt_dir, local_rank, strict=not tc.lora.enabled)
                if tc.resume else None)
    resumed_at = None
    if restored is not None:
        state, resumed_at = restored["mixtune"], engine.global_steps
        state["window"] += [0.0] * (4 - len(state["window"]))  # a checkpoint from before FLOPs were counted
        state.setdefault("flops_total", 0.0)
        by_rank = restored.get("batches_by_rank")  # a checkpoint from before: rank 0's state for every rank
        batches.load_state_dict(by_rank[rank] if by_rank else restored["batches"])
    client = None
    if rank == 0:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=cfg.tracking.uri)
        if restored is not None:
            print(f"resumed from {ckpt_root} at step {engine.global_steps}", flush=True)

    step = engine.global_steps
    engine.train()
    # Under KFP every redraw is a log line: redraw rarely.
    pbar = tqdm(total=max_steps, initial=step, desc="train", disable=rank != 0, mininterval=10.0)
    started = window_start = time.time()
    seconds_before = state["train_seconds"]
    torch.manual_seed(step_seed(tc.seed, rank, step))
    base = model_lib.unwrap(engine.module)
    # The loss sum stays on the device until a log line or checkpoint needs it: loss.item() every
    # micro-batch would make the host wait for the GPU before it builds the next batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    while step < max_steps:
        inputs, lengths, packed = batches.next(device)
        if packed and causal:
            loss = causal_packing.causal_token_loss(causal_packing.causal_forward(engine, inputs, True), inputs)
        elif packed:
            loss = packing.token_loss(packing.packed_forward(engine, inputs, targets_only=True), inputs)
        else:  # a causal LM's own loss is already taken in fp32
            loss = engine(**inputs).loss if causal else seq2seq_loss(engine, base, inputs)
        engine.backward(loss)
        engine.step()
        loss_sum += loss.detach()
        window = state["window"]
        window[1] += 1
        window[2] += lengths.src + lengths.tgt
        window[3] += flop_model.train(lengths)
        if engine.global_steps == step:
            continue  # still accumulating gradients
        step = engine.global_steps
        torch.manual_seed(step_seed(tc.seed, rank, step))
        pbar.update(1)
        if step == 1 or step % tc.log_every == 0 or step == max_steps:
            # A collective: every rank reaches it at the same step, so it cannot deadlock.
            window[0], loss_sum = window[0] + loss_sum.item(), torch.zeros_like(loss_sum)
            loss_total, micro_count, tokens, model_flops = reduce(window, device)
            elapsed = time.time() - window_start
            state["tokens_total"] += tokens
            state["flops_total"] += model_flops
            tflops = model_flops / max(elapsed, 1e-9) / world / 1e12  # per device
            entry = {"step": step, "loss": loss_total / micro_count, "lr": engine.get_lr()[0],
                     "tokens_per_second": tokens / max(elapsed, 1e-9), "tokens_seen": state["tokens_total"],
                     "model_tflops_per_device": tflops, **({"mfu": tflops / peak} if peak else {})}
            state["history"].append(entry)
            log_metrics(client, job["mlflow_run_id"], step, {  # run totals are the parent's to log
                "loss": entry["loss"], "lr": entry["lr"], "window_tokens_per_second": entry["tokens_per_second"],
                "window_model_tflops_per_device": tflops, **({"window_mfu": entry["mfu"]} if peak else {})})
            pbar.set_postfix(loss=f"{entry['loss']:.3f}", **({"mfu": f"{entry['mfu']:.1%}"} if peak else {}))
            if rank == 0:
                done = step - pbar.initial
                eta = (time.time() - started) / max(done, 1) * (max_steps - step)
                print(progress_line(step, max_steps, loss=entry["loss"], eta_seconds=eta,
                                    tokens_per_second=entry["tokens_per_second"]), flush=True)
            state["window"], window_start = [0.0] * 4, time.time()
        terminated = reduce([float(stop["term"])], device, dist.ReduceOp.MAX)[0] > 0
        due = tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < max_steps
        if due or terminated:  # the checkpoint carries the open window's loss as a number
            state["window"][0] += loss_sum.item()
            loss_sum = torch.zeros_like(loss_sum)
            state["train_seconds"] = seconds_before + time.time() - started
            # DeepSpeed keeps rank 0's client state only; packed ranks draw different numbers of
            # examples and hold different pending ones, so every rank's batch state goes in it.
            by_rank = [None] * world
            dist.all_gather_object(by_rank, batches.state_dict())
            uri = checkpoint.save(engine, store, ckpt_root, step, {"mixtune": state, "batches_by_rank": by_rank},
                                  ckpt_dir, tc.checkpoint_keep, local_rank, frozen=not tc.lora.enabled)
            if rank == 0:
                print(f"checkpoint step {step}: {uri}", flush=True)
        if terminated:
            pbar.close()
            print(f"rank {rank}: SIGTERM, stopped at step {step} after its checkpoint", flush=True)
            raise SystemExit(SIGTERM_EXIT)
    pbar.close()
    train_seconds = seconds_before + time.time() - started
    counts = loader.counts()
    tflops = state["flops_total"] / max(train_seconds, 1e-9) / world / 1e12
    export.save_and_upload(engine, job, cfg, rank, model_path, tokenizer_path, work, {
        "steps": step, "first_loss": state["history"][0]["loss"], "final_loss": state["history"][-1]["loss"],
        "train_seconds": train_seconds, "tokens_seen": int(state["tokens_total"]),
        "tokens_per_second": state["tokens_total"] / max(train_seconds, 1e-9), "world_size": world,
        "model_tflops_per_device": tflops, "mfu": tflops / peak if peak else None, "peak_tflops": peak,
        "precision": precision,
        "resumed_from_step": resumed_at,
        "samples_per_stream": counts, "history": state["history"],
    })
    dist.destroy_process_group()  # no barrier: other ranks need not wait for rank 0's upload


if __name__ == "__main__":
    main()
