"""The train step: check the shards, prepare the base model, run DeepSpeed on N processes.

The parent process (this module) does everything that happens once: the shards' presence and sizes
(every rank's loader verifies each shard's sha256 as it streams it), the base model, the DeepSpeed
config, MLflow params and inputs. `worker.py` runs in every rank and does the training, locally
under torchrun or in a cluster through Kubeflow Trainer (train.launcher); rank 0 uploads the model.
Outputs under `<artifact_root>/train/`: base_model/ (tiny base only), deepspeed_config.json,
job.json, checkpoints/ (resumable, the latest `checkpoint_keep`), train_log.json, model/ (+ _COMPLETE),
adapter/ (LoRA only). A run whose shards, config and code match an earlier finished run reuses
that run's model instead of training (train.reuse; components/common/reuse.py).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from components.common.config import MODELS_SCHEME, MixtuneConfig, TrainConfig
from components.common import reuse
from components.common.hf import local_copy
from components.common.storage import COMPLETE_MARKER, Store, join
from components.common.registry import first_round_config
from components.common.tracking import step_run
from components.train import launch, model as model_lib
from components.train.loader import ShardChecksumError


@dataclass
class TrainResult:
    model_uri: str
    base_model_uri: str
    mlflow_run_id: str
    steps: int
    final_loss: float
    first_loss: float
    train_seconds: float
    tokens_seen: int
    tokens_per_second: float


def resolve_device(train: TrainConfig) -> str:
    import torch

    if train.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    if train.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return train.device


def _bf16_gpu() -> bool:
    """Whether the visible GPU computes bf16 (Ampere and later; DeepSpeed refuses it on V100/T4). A pod
    that only submits to Kubeflow Trainer sees no GPU: it assumes the cluster's GPUs do."""
    import torch

    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


def deepspeed_config(train: TrainConfig, device: str) -> dict:
    """The DeepSpeed JSON made from TrainConfig. No optimizer section: the worker passes AdamW,
    because a config optimizer makes DeepSpeed compile fused Adam (~60 s)."""
    bf16 = train.precision == "bf16" or (train.precision == "auto" and device == "cuda" and _bf16_gpu())
    warmup = min(train.warmup_steps, train.max_steps)
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.gradient_clipping,
        "zero_optimization": {"stage": train.zero_stage},
        "bf16": {"enabled": bf16},
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": train.learning_rate, "warmup_num_steps": warmup,
                       "total_num_steps": train.max_steps, "warmup_type": "linear"},
        },
        "steps_per_print": 10**9,  # progress is ours (tqdm + MLflow), not DeepSpeed's log lines
        "wall_clock_breakdown": False,
    }


def effective_deepspeed_config(train: TrainConfig, device: str) -> dict:
    """cfg.train.deepspeed_config (a JSON file) when given, else the generated one.

    Batch keys missing or "auto" in the file are filled from TrainConfig, as HF does."""
    if train.deepspeed_config is None:
        return deepspeed_config(train, device)
    path = Path(train.deepspeed_config)
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"train.deepspeed_config {path}: cannot read a JSON object: {e}") from None
    if not isinstance(ds, dict):
        raise ValueError(f"train.deepspeed_config {path}: top level must be an object")
    for key, value in (("train_micro_batch_size_per_gpu", train.micro_batch_size),
                       ("gradient_accumulation_steps", train.gradient_accumulation_steps)):
        if ds.get(key, "auto") == "auto" and "train_batch_size" not in ds:
            ds[key] = value
    return ds


def read_manifest(store: Store, shards_uri: str) -> dict:
    uri = join(shards_uri, "manifest.json")
    if not store.exists(uri):
        raise FileNotFoundError(f"{uri} is missing: the shards step has not finished writing {shards_uri}")
    manifest = store.get_json(uri)
    train = manifest.get("splits", {}).get("train", {})
    if not train.get("shards") or not train.get("rows"):
        raise ValueError(f"{uri}: the train split has no rows")
    return manifest


def check_shards(store: Store, manifest: dict, split: str = "train") -> None:
    """Every shard exists with the size and ETag the manifest recorded: a missing, truncated or
    replaced shard fails here, before any process starts, from HEAD requests alone. The loader still
    checks each shard's sha256 as it streams the bytes."""
    for shard in manifest["splits"][split]["shards"]:
        found = store.head(shard["uri"])
        if found is None:
            raise ShardChecksumError(f"{shard['uri']}: listed in the shards manifest but missing")
        if "bytes" in shard and found[0] != shard["bytes"]:
            raise ShardChecksumError(f"{shard['uri']}: {found[0]} bytes, the manifest says {shard['bytes']} "
                                     "(truncated or replaced)")
        if shard.get("etag") and found[1] != shard["etag"]:
            raise ShardChecksumError(f"{shard['uri']}: changed since the shards step wrote it (ETag {found[1]}, "
                                     f"the manifest says {shard['etag']}); rerun the shards step")


def pinned_base(cfg: MixtuneConfig, manifest: dict) -> dict:
    """The base model as the shards step pinned it ({ref, uri, registered_model, version}): a models:/
    alias is resolved once per run, so train and evaluate load the version the tokenizer came from."""
    pinned = manifest.get("base_model")
    if pinned is None:  # shards written before the base was pinned: only a reference that cannot move
        if cfg.model.base.startswith(MODELS_SCHEME):
            raise ValueError(f"{cfg.model.base}: the shards manifest does not say which version the shards step "
                             "resolved; rerun the shards step")
        return {"ref": cfg.model.base, "uri": cfg.model.base, "registered_model": None, "version": None}
    if pinned["ref"] != cfg.model.base:
        raise ValueError(f"model.base is {cfg.model.base!r} but the shards were tokenized for {pinned['ref']!r}; "
                         "rerun the shards step with this config")
    return pinned


def prepare_base(cfg: MixtuneConfig, manifest: dict, store: Store, tokenizer_dir: Path,
                 work: Path, out: str) -> tuple[str, str, str]:
    """(local path or hub id the workers load, base_model_uri evaluation scores, architecture)."""
    if cfg.model.base != "tiny":
        pinned = pinned_base(cfg, manifest)
        if pinned["version"]:
            mlflow.set_tags({"mixtune.base_model": pinned["ref"], "mixtune.base_model_version": pinned["version"]})
        uri = pinned["uri"]
        ref = local_copy(uri, store)  # s3:// dirs are downloaded; hub ids and paths pass through
        if model_lib.base_vocab_size(ref) < manifest["vocab_size"]:
            raise ValueError(f"base model {cfg.model.base} has fewer embeddings than the shards' tokenizer "
                             f"({manifest['vocab_size']} tokens)")
        return ref, uri, model_lib.resolve_architecture(cfg.model.architecture, ref)
    from transformers import AutoTokenizer

    architecture = model_lib.resolve_architecture(cfg.model.architecture, "tiny")
    tiny = model_lib.build_tiny(cfg.model.tiny, manifest["vocab_size"], manifest["pad_token_id"],
                                manifest["eos_token_id"], cfg.train.seed, architecture,
                                cfg.model.max_source_length + cfg.model.max_target_length)
    local = model_lib.save_model(tiny, AutoTokenizer.from_pretrained(tokenizer_dir), work / "base_model")
    base_uri = join(out, "base_model")
    _clear_complete(store, base_uri)
    store.upload_dir(local, base_uri)
    store.put_json(join(base_uri, COMPLETE_MARKER), {"seed": cfg.train.seed})  # last: readers check it
    return str(local), base_uri, architecture


def _clear_complete(store: Store, model_uri: str) -> None:
    """Drop a previous attempt's marker first, so a rerun never looks finished while it uploads."""
    store.delete(join(model_uri, COMPLETE_MARKER))


def _flatten(prefix: str, obj: dict) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update(_flatten(f"{prefix}{key}.", value))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _log_inputs(cfg: MixtuneConfig, manifest: dict, shards_uri: str, device: str, ds_config: dict) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    params = {**_flatten("train.", cfg.train.model_dump()), **_flatten("model.", cfg.model.model_dump())}
    params.update({"device": device, "num_processes": cfg.train.num_processes,
                   "train_rows": manifest["splits"]["train"]["rows"], "vocab_size": manifest["vocab_size"]})
    mlflow.log_params(params)
    version = str(manifest["dataset_version"])
    versions = [str(v) for v in manifest.get("dataset_versions", [version])]
    mlflow.set_tags({"mixtune.dataset_version": version, "mixtune.dataset_versions": ",".join(versions)})
    # MLflow caps a dataset digest at 36 characters; the full version is the tag above.
    dataset = MetaDataset(resolve_dataset_source(shards_uri), name="mixtune-shards", digest=version[:36])
    mlflow.log_input(dataset, context="training")
    for old in versions[1:]:  # datasets rehearsed through replay: the model was trained on them too
        mlflow.log_input(MetaDataset(resolve_dataset_source(shards_uri), name="mixtune-replay", digest=old[:36]),
                         context="replay")
    mlflow.log_dict(ds_config, "deepspeed_config.json")


# Knobs that change where or how the job runs, never the weights it produces.
NOT_IN_KEY = {"launcher", "kubernetes", "checkpoint_every", "checkpoint_keep", "checkpoint_uri", "resume", "reuse",
              "log_every"}


def train_key(cfg: MixtuneConfig, manifest: dict) -> str:
    """What the weights depend on: the shards' bytes (by sha256, not where they are), the model and
    train config, and the code (components/common/reuse.py)."""
    shards = {name: sorted((s["stream"], s["sha256"], s["rows"]) for s in split["shards"])
              for name, split in manifest["splits"].items()}
    header = {k: v for k, v in manifest.items() if k not in ("splits", "tokenize", "tokenizer_uri")}
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in NOT_IN_KEY}
    return reuse.content_key("train", shards=shards, manifest=header, train=train,
                             model=cfg.model.model_dump(mode="json"))


def _still_complete(store: Store, outputs: dict) -> bool:
    uris = [outputs["model_uri"], outputs["base_model_uri"]]
    return all(store.exists(join(uri, COMPLETE_MARKER)) for uri in uris if uri.startswith("s3://"))  # not hub ids


def _reused(entry: dict, run_id: str) -> TrainResult:
    """Tag this step's run with where the model came from; the dataset lineage is logged as usual."""
    out = entry["outputs"]
    mlflow.set_tags({"mixtune.reused": "true", "mixtune.reused_from_run": entry["pipeline_run"],
                     "mixtune.reused_train_run_id": out["mlflow_run_id"], "mixtune.model_uri": out["model_uri"]})
    fields = ("steps", "final_loss", "first_loss", "train_seconds", "tokens_seen", "tokens_per_second")
    mlflow.log_metrics({k: out[k] for k in fields}, step=out["steps"])
    return TrainResult(model_uri=out["model_uri"], base_model_uri=out["base_model_uri"], mlflow_run_id=run_id,
                       **{k: out[k] for k in fields})


def run_train(cfg: MixtuneConfig, shards_uri: str, artifact_root: str, pipeline_run: str) -> TrainResult:
    store = Store(cfg.storage)
    out = join(artifact_root, "train")
    cluster = cfg.train.launcher != "local"
    device = "cuda" if cluster and cfg.train.kubernetes.gpus_per_node else resolve_device(cfg.train)
    nproc = cfg.train.num_processes
    if device == "cuda" and not cluster:
        import torch

        if nproc > torch.cuda.device_count():
            raise ValueError(f"train.num_processes={nproc} but only {torch.cuda.device_count()} GPU(s) are visible: "
                             f"set train.num_processes to at most that (one process per GPU; e.g. "
                             f"--set train.num_processes={torch.cuda.device_count()}), or train.device: cpu")
    ds_config = effective_deepspeed_config(cfg.train, device)
    with tempfile.TemporaryDirectory(prefix="mixtune-train-") as tmp, step_run(cfg, pipeline_run, "train") as run:
        work = Path(tmp)
        manifest = read_manifest(store, shards_uri)
        cfg = first_round_config(cfg, manifest.get("base_model"))  # no champion yet: model.initial_base
        check_shards(store, manifest)
        key = train_key(cfg, manifest)
        mlflow.set_tag("mixtune.reuse_key", key)
        hit = reuse.lookup(store, "train", key, lambda o: _still_complete(store, o)) if cfg.train.reuse else None
        if hit is not None:
            _log_inputs(cfg, manifest, shards_uri, device, ds_config)
            return _reused(hit, run.info.run_id)
        tokenizer_dir = store.download_dir(manifest["tokenizer_uri"], work / "tokenizer")
        base_path, base_uri, architecture = prepare_base(cfg, manifest, store, tokenizer_dir, work, out)
        store.put_json(join(out, "deepspeed_config.json"), ds_config)
        _log_inputs(cfg, manifest, shards_uri, device, ds_config)
        mlflow.log_param("architecture", architecture)
        _clear_complete(store, join(out, "model"))

        job = {
            "config": json.loads(cfg.model_dump_json()), "device": device, "deepspeed_config": ds_config,
            "shards_manifest": manifest, "architecture": architecture,
            # Decoder tokenizers often have no pad token: padded positions are masked, so </s> serves.
            "pad_token_id": manifest["pad_token_id"] if manifest["pad_token_id"] is not None
            else manifest["eos_token_id"], "eos_token_id": manifest["eos_token_id"],
            "mlflow_run_id": run.info.run_id, "output_uri": out,
            "checkpoint_root": cfg.train.checkpoint_uri or join(out, "checkpoints"),
            # A pod elsewhere reads S3; local ranks reuse the parent's files.
            "model_path": base_uri if cluster else base_path,
            "tokenizer_path": manifest["tokenizer_uri"] if cluster else str(tokenizer_dir),
            "work_dir": None if cluster else str(work),
        }
        store.put_json(join(out, "job.json"), job)
        started = time.time()
        if cluster:
            _run_in_cluster(cfg, join(out, "job.json"), pipeline_run)
        else:
            job_path = work / "job.json"
            job_path.write_text(json.dumps(job, indent=2))
            try:
                launch.launch(["-m", "components.train.worker", "--job", str(job_path)], nproc, device,
                              work / "train.log")
            finally:
                mlflow.log_artifact(str(work / "train.log"))  # the workers' output, on failure too
        result = store.get_json(join(out, "train_log.json"))
        mlflow.log_metrics({
            "final_loss": result["final_loss"], "first_loss": result["first_loss"], "steps": result["steps"],
            "train_seconds": result["train_seconds"], "tokens_seen": result["tokens_seen"],
            "tokens_per_second": result["tokens_per_second"], "launch_seconds": time.time() - started,
            **{k: result[k] for k in ("model_tflops_per_device", "mfu") if result.get(k) is not None},
        }, step=result["steps"])
        mlflow.log_dict(result, "train_log.json")
        if result.get("resumed_from_step") is not None:
            mlflow.set_tag("mixtune.resumed_from_step", str(result["resumed_from_step"]))
        mlflow.set_tag("mixtune.model_uri", join(out, "model"))
        trained = TrainResult(
            model_uri=join(out, "model"), base_model_uri=base_uri, mlflow_run_id=run.info.run_id,
            steps=result["steps"], final_loss=result["final_loss"], first_loss=result["first_loss"],
            train_seconds=result["train_seconds"], tokens_seen=result["tokens_seen"],
            tokens_per_second=result["tokens_per_second"],
        )
        if cfg.train.reuse:
            reuse.publish(store, "train", key, asdict(trained), pipeline_run)
        return trained


def _run_in_cluster(cfg: MixtuneConfig, job_uri: str, pipeline_run: str) -> None:
    """Hand the ranks to Kubeflow Trainer (TrainJob, or PyTorchJob on older clusters) and wait.
    A retried step finds its job by name and waits on it instead of starting a second one."""
    from components.train import kubeflow

    manifest = kubeflow.manifest_for(cfg, job_uri, f"{pipeline_run}-train", pipeline_run)
    mlflow.log_dict(manifest, "kubeflow_job.json")
    k = cfg.train.kubernetes
    kubeflow.submit_and_wait(manifest, poll_seconds=k.poll_seconds, timeout_seconds=k.timeout_seconds)
