"""Templates-step output built here (examples Parquet per split + manifest), so most shards tests need
no ingest or templates run: two tasks, replayed rows of one of them, texts long enough to be truncated."""
from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.config import MixtuneConfig
from components.common.schemas import EXAMPLE_SCHEMA, SPLITS
from components.common.storage import Store, join

WORDS = ("order refund parcel late agent customer sorry address card payment invoice delivery plan "
         "upgrade cancel account password reset weekend Monday euro 42 7 19 thanks please check today").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def example_rows(split: str, n: int, seed: int = 0, replay_every: int = 5) -> list[dict]:
    """n rows sorted by id (as templates writes them); every replay_every-th is a replayed summary."""
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in range(n):
        task = "summarization" if i % 3 else "intent"
        rid = f"chat:{split}-{i:05d}#0"
        if split == "train" and replay_every and i % replay_every == 0:
            task, rid = "summarization", "replay:" + rid
        # Some inputs run past max_source_length (192 in tiny_config) so truncation is exercised.
        inputs = f"Summarize: {sentence(rng, rng.choice([8, 30, 120, 400]))}"
        rows.append({"id": rid, "record_id": rid.split("#")[0], "task": task, "template_id": "t-01",
                     "template_kind": "zero_shot", "inputs": inputs, "targets": sentence(rng, rng.randint(2, 90))})
    return sorted(rows, key=lambda r: r["id"])


def write_examples(store: Store, uri: str, rows: dict[str, int], weights: dict[str, float] | None = None,
                   row_group_size: int | None = None) -> dict:
    """<uri>/<split>.parquet for every split and <uri>/manifest.json; returns the manifest."""
    for split in SPLITS:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(example_rows(split, rows.get(split, 0)), schema=EXAMPLE_SCHEMA), buf,
                       row_group_size=row_group_size)
        store.put_bytes(join(uri, f"{split}.parquet"), buf.getvalue())
    manifest = {"dataset_version": "v-test", "dataset_versions": ["v-test"],
                "split_rows": {s: rows.get(s, 0) for s in SPLITS}}
    if weights is not None:
        manifest["mixture"] = {"weights": weights}
    store.put_json(join(uri, "manifest.json"), manifest)
    return manifest


@pytest.fixture
def shards_config(tiny_config: MixtuneConfig):
    """tiny_config with shards settings (and optionally model.tokenizer) replaced:
    shards_config(rows_per_shard=40, workers=2, tokenizer="/path")."""
    def make(tokenizer: str | None = None, **shards) -> MixtuneConfig:
        model = tiny_config.model.model_copy(update={"tokenizer": tokenizer}) if tokenizer else tiny_config.model
        return tiny_config.model_copy(update={"shards": tiny_config.shards.model_copy(update=shards), "model": model})
    return make


@pytest.fixture
def trained_tokenizer_dir(tmp_path) -> str:
    """A tiny tokenizer trained once and saved: Unigram training is not reproducible run to run (the
    `tokenizers` trainer breaks ties in hash order), so tests comparing two runs load this one."""
    from components.shards.tokenizer import train_unigram

    rows = example_rows("train", 300)
    train_unigram(iter([[r["inputs"] for r in rows], [r["targets"] for r in rows]]), 600).save_pretrained(
        tmp_path / "tokenizer")
    return str(tmp_path / "tokenizer")


@pytest.fixture
def examples_writer(store: Store):
    """write_examples on this test's store: examples_writer(uri, {"train": 90}, weights=None)."""
    return lambda uri, rows, **kw: write_examples(store, uri, rows, **kw)


@pytest.fixture
def examples_uri(store: Store) -> str:
    """600 train rows (120 replayed), 60 validation, 45 test; row groups of 100 rows."""
    uri = join(store.root, "runs", "e1", "templates")
    write_examples(store, uri, {"train": 600, "validation": 60, "test": 45},
                   weights={"summarization": 0.6, "intent": 0.3, "replay/summarization": 0.1}, row_group_size=100)
    return uri


@pytest.fixture
def register_champion(store: Store):
    """register_champion(cfg, model_dir, name): upload model_dir as an earlier run's model and register it
    as `name` v1, alias champion, in cfg's registry; returns the s3:// prefix a models:/ base pins to."""
    def register(cfg: MixtuneConfig, model_dir: str, name: str) -> str:
        from mlflow.tracking import MlflowClient

        from components.common.tracking import MODEL_URI_TAG, setup

        setup(cfg)
        uri = join(store.root, "runs", "earlier", "train", "model")
        store.upload_dir(model_dir, uri)
        client = MlflowClient()
        client.create_registered_model(name)
        client.create_model_version(name, source=uri, tags={MODEL_URI_TAG: uri})
        client.set_registered_model_alias(name, "champion", "1")
        return uri
    return register
