"""Tiny seeded models and registered versions for the tests that load, infer with or serve a model
(tests/components/infer, serve, common/test_mlflow_model.py, tests/faults/test_serve_faults.py).

The models are random but input-dependent: a larger init scale makes their outputs depend on the
input, and zeroed special-token embeddings keep them from stopping at once, so comparing two
outputs means something.
"""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from components.common.config import MixtuneConfig
from components.common.mlflow_model import PACKAGED_TAG, model_spec, write_mlflow_model
from components.common.storage import Store, join
from components.common.tracking import MODEL_URI_TAG, setup
from pipelines.sample_data import generate as sample_chats


def dialogues(n: int = 5, seed: int = 11) -> list[tuple[str, str]]:
    """(record id, "Speaker: text" dialogue) pairs of generated support chats."""
    out = []
    for conv in sample_chats(n, seed=seed):
        text = "\n".join(f"{m['role'].title()}: {m['content']}" for m in conv["messages"])
        out.append((f"sample:{conv['conversation_id']}", text))
    return out


def tiny_tokenizer():
    from components.shards.tokenizer import train_unigram

    return train_unigram([t for _, t in dialogues(40)], vocab_size=300)


def tiny_model_dirs(root: Path, seeds=(0, 1), architecture: str = "seq2seq") -> dict[int, Path]:
    """save_pretrained folders (safetensors + tokenizer) of tiny random models sharing one tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = tiny_tokenizer()
    if architecture == "causal":
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                             initializer_range=0.2)
        build = LlamaForCausalLM
    else:
        config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1,
                          num_decoder_layers=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          decoder_start_token_id=tok.pad_token_id, initializer_factor=3.0)
        build = T5ForConditionalGeneration
    dirs = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = build(config)
        with torch.no_grad():
            model.get_input_embeddings().weight[tok.all_special_ids] = 0
        dirs[seed] = root / f"{architecture}-seed{seed}"
        model.save_pretrained(dirs[seed])
        tok.save_pretrained(dirs[seed])
    return dirs


def package_folder(local: Path, cfg: MixtuneConfig) -> Path:
    """Make a local model folder an MLflow model, as KServe's storage initializer leaves a version in
    /mnt/models (the register step writes the same files into the version's S3 prefix)."""
    import shutil
    import tempfile

    from components.common.mlflow_model import save_mlflow_model

    with tempfile.TemporaryDirectory() as tmp:
        saved = save_mlflow_model(Path(tmp) / "m", model_spec(cfg))
        shutil.copytree(saved, local, dirs_exist_ok=True)
    return local


def register_dir(cfg: MixtuneConfig, store: Store, local: Path, run: str, alias: str | None = None,
                 complete: bool = True, package: bool = True) -> str:
    """Upload a model folder as a run's model and register it as a new version; returns the version.
    package=True makes it an MLflow model as the register step does; False = a version from before."""
    uri = join(store.root, "runs", run, "train", "model")
    store.upload_dir(local, uri)
    if complete:
        store.put_bytes(join(uri, "_COMPLETE"), b"")
    tags = {MODEL_URI_TAG: uri}
    if package:
        write_mlflow_model(store, uri, model_spec(cfg))
        tags[PACKAGED_TAG] = "pyfunc"
    setup(cfg)
    client, name = MlflowClient(), cfg.registry.model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = str(client.create_model_version(name, source=uri, tags=tags).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version
