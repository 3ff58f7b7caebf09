"""Every registered version is an MLflow model: the MLmodel and its files land beside the weights, and
MLflow's own loader (models:/ URIs through the real SQLite registry and SeaweedFS) predicts with it."""
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from components.common import mlflow_model
from components.common.config import MixtuneConfig
from components.common.generation import GenerationSettings, build_prompt, generate
from components.common.mlflow_model import MLMODEL, model_spec, write_mlflow_model
from components.common.storage import Store, join
from components.common.weights import load_local_model
from tests.tiny_models import dialogues, register_dir, tiny_model_dirs

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory) -> dict[int, Path]:
    return tiny_model_dirs(tmp_path_factory.mktemp("pyfunc-t5"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return tiny_model_dirs(tmp_path_factory.mktemp("pyfunc-llama"), seeds=(0,), architecture="causal")[0]


@pytest.fixture
def cfg(tiny_config) -> MixtuneConfig:
    return tiny_config.model_copy(update={
        "infer": tiny_config.infer.model_copy(update={"batch_size": 2}),
        "generation": tiny_config.generation.model_copy(update={"max_new_tokens": 10, "no_repeat_ngram_size": 3})})


def direct(cfg: MixtuneConfig, local: Path, texts: list[str]) -> list[str]:
    """The same prompts and settings through generate(), with the model loaded directly."""
    from transformers import AutoTokenizer

    settings = GenerationSettings(batch_size=cfg.infer.batch_size, num_beams=cfg.generation.num_beams,
                                  max_new_tokens=cfg.generation.max_new_tokens,
                                  max_source_length=cfg.model.max_source_length, no_repeat_ngram_size=3)
    prompts = [build_prompt(cfg.infer.prompt, t) for t in texts]
    return generate(load_local_model(str(local)), AutoTokenizer.from_pretrained(local), prompts, settings)


def test_the_mlflow_model_lands_beside_the_weights_mlmodel_last(cfg, store, t5_dirs, monkeypatch):
    uri = join(store.root, "runs", "m1", "train", "model")
    store.upload_dir(t5_dirs[0], uri)
    before = {u: etag for u, _, etag in store.list_meta(uri)}
    order: list[str] = []
    put = Store.put_file
    monkeypatch.setattr(Store, "put_file", lambda self, u, p: (order.append(u.rsplit("/", 1)[1]), put(self, u, p))[1])

    written = write_mlflow_model(store, uri, model_spec(cfg))

    assert order[-1] == MLMODEL and len(order) == len(written)
    after = {u: etag for u, _, etag in store.list_meta(uri)}
    assert all(after[u] == etag for u, etag in before.items())  # the weights are not touched
    names = {u[len(uri) + 1:] for u in after}
    assert {"MLmodel", "summarizer_model.py", "requirements.txt", "input_example.json",
            "code/mixtune_pyfunc/generation.py", "code/mixtune_pyfunc/weights.py",
            "model.safetensors", "config.json"} <= names
    # The shipped code is no `components` package: MLflow puts code/ first on sys.path, where a partial
    # one would shadow mixtune's own for processes started later.
    assert not any(n.startswith("code/components") for n in names)
    doc = yaml.safe_load(store.get_bytes(join(uri, MLMODEL)))
    flavor = doc["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["config"] == {"schema": 1, "task": "summarization", "prompt": cfg.infer.prompt,
                                "generation": {"batch_size": 2, "num_beams": 1, "max_new_tokens": 10,
                                               "max_source_length": cfg.model.max_source_length, "dtype": None,
                                               "no_repeat_ngram_size": 3, "repetition_penalty": 1.0,
                                               "length_penalty": 1.0, "copy_facts": False}}
    assert json.loads(doc["signature"]["inputs"]) == [{"type": "string", "required": True}]
    assert json.loads(doc["signature"]["outputs"]) == [{"type": "string", "required": True}]
    requirements = store.get_bytes(join(uri, "requirements.txt")).decode().split()
    assert "torch==2.13.0" in requirements and "transformers==5.23.0" in requirements
    assert all("==" in r for r in requirements)


def test_pyfunc_from_the_registry_predicts_like_generate(cfg, store, t5_dirs):
    version = register_dir(cfg, store, t5_dirs[0], "m2", alias="champion")
    texts = [t for _, t in dialogues(5)]
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    assert model.metadata.signature is not None
    out = list(model.predict(texts))
    assert out == direct(cfg, t5_dirs[0], texts)
    assert all(out) and len(set(out)) > 1
    # The version loads by number too, and a one-column DataFrame (dataframe_records) reads the same.
    import pandas as pd

    by_number = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/{version}")
    assert list(by_number.predict(pd.DataFrame({"dialogue": texts[:2]}))) == out[:2]


def test_a_decoder_only_model_is_served_the_same_way(cfg, store, llama_dir):
    register_dir(cfg, store, llama_dir, "m3", alias="champion")
    texts = [t for _, t in dialogues(3)]
    out = list(mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion").predict(texts))
    assert out == direct(cfg, llama_dir, texts)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert not any(o.startswith("Summarize") for o in out)  # the continuation only, never the prompt


def test_the_model_loads_where_mixtune_is_not_installed(cfg, store, t5_dirs, tmp_path):
    """What travels in the version (its code_paths) is all the pyfunc imports from mixtune."""
    register_dir(cfg, store, t5_dirs[1], "m4", alias="champion")
    local = mlflow.artifacts.download_artifacts(f"models:/{cfg.registry.model_name}@champion",
                                                dst_path=str(tmp_path / "dl"))
    texts = [t for _, t in dialogues(2)]
    script = (
        "import json, sys\n"
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path = [p for p in sys.path if p not in ('', '.', {str(REPO)!r})]\n"
        "import mlflow\n"
        f"out = mlflow.pyfunc.load_model({local!r}).predict({texts!r})\n"
        "import importlib.util, mixtune_pyfunc\n"
        "print(json.dumps({'out': list(out), 'shipped': mixtune_pyfunc.__file__,\n"
        "                  'mixtune': importlib.util.find_spec('components') is not None}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shipped"].startswith(str(Path(local).resolve())) and not result["mixtune"]
    assert result["out"] == direct(cfg, t5_dirs[1], texts)


def test_a_weights_file_is_never_overwritten(cfg, store, t5_dirs, monkeypatch):
    uri = join(store.root, "runs", "m5", "train", "model")
    store.upload_dir(t5_dirs[0], uri)
    store.put_bytes(join(uri, "requirements.txt"), b"the model's own file\n")
    monkeypatch.setattr(mlflow_model, "MLFLOW_FILES", tuple(f for f in mlflow_model.MLFLOW_FILES
                                                            if f != "requirements.txt"))
    with pytest.raises(FileExistsError, match="requirements.txt: the model prefix already has this file"):
        write_mlflow_model(store, uri, model_spec(cfg))
    assert not store.exists(join(uri, MLMODEL))  # MLmodel is last: the prefix did not become a model


def test_a_rewrite_leaves_no_stale_code_behind(cfg, store, t5_dirs):
    uri = join(store.root, "runs", "m6", "train", "model")
    store.upload_dir(t5_dirs[0], uri)
    write_mlflow_model(store, uri, model_spec(cfg))
    stale = join(uri, "code", "components", "common", "generation.py")  # an earlier packaging's layout
    store.put_bytes(stale, b"# old\n")
    changed = cfg.model_copy(update={"infer": cfg.infer.model_copy(update={"prompt": "Summarise:\n{dialogue}"})})
    write_mlflow_model(store, uri, model_spec(changed))
    assert not store.exists(stale) and store.exists(join(uri, "code", "mixtune_pyfunc", "generation.py"))
    doc = yaml.safe_load(store.get_bytes(join(uri, MLMODEL)))
    assert doc["flavors"]["python_function"]["config"]["prompt"] == "Summarise:\n{dialogue}"
    assert store.exists(join(uri, "model.safetensors"))
