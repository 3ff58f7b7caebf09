"""Fixtures for evaluate tests: real tiny T5 models (random and briefly trained) and a test split.

The trained model is honestly better than the random one: it is fitted for a few dozen steps on
the very examples it is scored on, so its summaries share words with the references.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from components.common.schemas import EXAMPLE_SCHEMA, write_table
from components.common.storage import Store, join
from pipelines.sample_data import generate

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
TOKENIZER = SHARED / "models" / "t5-tokenizer"
N_TEST_ROWS = 24


def example_rows(n: int = N_TEST_ROWS) -> list[dict]:
    """Test-split rows in EXAMPLE_SCHEMA, in a shuffled id order (evaluate must sort them)."""
    rows = []
    for conv in generate(n, seed=3):
        dialogue = "\n".join(f"{m['role'].title()}: {m['content']}" for m in conv["messages"])
        rid = f"sample:{conv['conversation_id']}"
        rows.append({"id": f"{rid}#0", "record_id": rid, "task": "summarization", "template_id": "t0",
                     "inputs": f"Summarize the conversation.\n\n{dialogue}", "targets": conv["summary"]})
    return rows[::2] + rows[1::2]


def build_tiny_t5(out: Path, seed: int, train_steps: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1,
                      num_decoder_layers=1, decoder_start_token_id=tok.pad_token_id,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if train_steps:
        rows = example_rows()
        enc = tok([r["inputs"] for r in rows], return_tensors="pt", padding=True, truncation=True, max_length=128)
        labels = tok([r["targets"] for r in rows], return_tensors="pt", padding=True, truncation=True,
                     max_length=40).input_ids
        labels[labels == tok.pad_token_id] = -100
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(train_steps):
            i = torch.randint(0, len(rows), (8,), generator=gen)
            loss = model(input_ids=enc.input_ids[i], attention_mask=enc.attention_mask[i], labels=labels[i]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Local save_pretrained dirs: 'random' (untrained) and 'trained' (80 steps on the test rows)."""
    if not TOKENIZER.exists():
        pytest.skip(f"{TOKENIZER} is absent (the real T5 tokenizer lives in ../shared)")
    root = tmp_path_factory.mktemp("models")
    return {"random": build_tiny_t5(root / "random", seed=0),
            "trained": build_tiny_t5(root / "trained", seed=1, train_steps=80)}


def upload_model(store: Store, local: Path, uri: str, complete: bool = True) -> str:
    store.upload_dir(local, uri)
    if complete:
        store.put_bytes(join(uri, "_COMPLETE"), b"")
    return uri


@pytest.fixture
def rows() -> list[dict]:
    """The test split as written to S3 (unsorted)."""
    return example_rows()


@pytest.fixture
def upload(store: Store):
    """upload(local_dir, uri, complete=True): a model prefix, with or without its _COMPLETE marker."""
    return lambda local, uri, complete=True: upload_model(store, local, uri, complete)


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path, monkeypatch):
    # hf.local_copy caches by URI; buckets are reused across tests, so each test gets its own cache.
    monkeypatch.setenv("MIXTUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def examples_uri(store: Store) -> str:
    uri = join(store.root, "runs", "r1", "examples")
    write_table(store, join(uri, "test.parquet"), example_rows(), EXAMPLE_SCHEMA)
    store.put_json(join(uri, "manifest.json"), {"dataset_version": "dv-test-1", "splits": {"test": N_TEST_ROWS}})
    return uri


@pytest.fixture
def models(store: Store, model_dirs) -> dict[str, str]:
    """s3 prefixes: 'base' = the random model, 'candidate' = the trained one, both complete."""
    return {
        "base": upload_model(store, model_dirs["random"], join(store.root, "runs", "r1", "base-model")),
        "candidate": upload_model(store, model_dirs["trained"], join(store.root, "runs", "r1", "model")),
    }
