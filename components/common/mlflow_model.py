"""Make a model prefix an MLflow model: write an `MLmodel` (pyfunc, models from code), the code file
(summarizer_model.py) and the code it imports, pinned requirements, a signature (text in, text out)
and an input example into the prefix, beside the weights, so `mlflow.pyfunc.load_model("models:/...")`
and `mlflow models serve` load any version without a second copy of its weights.

The register step calls this before it creates a version; `mixtune package-model` adds it to versions
registered before (in place: only these small files are written; the weights are not touched). The
MLmodel file is uploaded last, so a prefix that has one has the rest too.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import tempfile
import warnings
from pathlib import Path

from components.common.config import MixtuneConfig
from components.common.generation import GenerationSettings, check_prompt
from components.common.storage import Store, join

MLMODEL = "MLmodel"
# What save_model writes beside the MLmodel (and code/): rewritten by a repackaging, never a weights file.
MLFLOW_FILES = (MLMODEL, "conda.yaml", "python_env.yaml", "requirements.txt", "input_example.json",
                "serving_input_example.json", "summarizer_model.py")
SPEC_SCHEMA = 1
PACKAGED_TAG = "mixtune.mlflow_model"  # on a version: "pyfunc" once its prefix holds an MLmodel
CODE_FILE = Path(__file__).with_name("summarizer_model.py")
# What the code file imports from mixtune, shipped as its code_paths: copies of these modules (which
# import no other mixtune module) in a package of their own. Not under `components`: MLflow puts a
# model's code folder first on sys.path, and a partial `components` there would shadow the real one
# for every process started afterwards (a step's worker pool, say).
SHIPPED_PACKAGE = "mixtune_pyfunc"
SHIPPED_MODULES = ("generation.py", "weights.py", "fact_copy.py")
# Pinned as installed here: the versions the model was saved with. torch's local label (+cu128) is
# dropped, so the same pin fits the CPU and the CUDA build.
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "tqdm", "pandas")
INPUT_EXAMPLE = ["Customer: Hi, I was charged twice for order 4417 this morning.\n"
                 "Agent: Sorry about that. I can see both charges of 58.95 euros; I have refunded the second one.\n"
                 "Customer: Thanks, how long will it take?\nAgent: Three to five business days."]


def generation_settings(cfg: MixtuneConfig, batch_size: int | None = None) -> GenerationSettings:
    """What evaluate, batch inference and the served model generate with (the `generation` section), so the
    scores describe the text production returns. batch_size: evaluate's own (default infer.batch_size)."""
    g = cfg.generation
    return GenerationSettings(batch_size=batch_size or cfg.infer.batch_size, num_beams=g.num_beams,
                              max_new_tokens=g.max_new_tokens, max_source_length=cfg.model.max_source_length,
                              no_repeat_ngram_size=g.no_repeat_ngram_size, repetition_penalty=g.repetition_penalty,
                              length_penalty=g.length_penalty, copy_facts=g.copy_facts)


def model_spec(cfg: MixtuneConfig) -> dict:
    """The MLmodel's model_config: the prompt and generation settings the pyfunc applies to raw dialogues."""
    check_prompt(cfg.infer.prompt)
    settings = generation_settings(cfg)
    return {"schema": SPEC_SCHEMA, "task": "summarization", "prompt": cfg.infer.prompt,
            "generation": dataclasses.asdict(settings)}


def pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def _code_tree(root: Path) -> Path:
    """root/mixtune_pyfunc: the shipped modules (MLflow copies code_paths into the model's code/ folder)."""
    package = root / SHIPPED_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Copies of mixtune\'s generation and weights modules, saved with this '
                                         'model by components/common/mlflow_model.py."""\n')
    for name in SHIPPED_MODULES:
        (package / name).write_bytes((CODE_FILE.parent / name).read_bytes())
    return package


def save_mlflow_model(dest: Path, spec: dict) -> Path:
    """The MLflow model files (no weights) in dest, which must not exist or be empty."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The signature is given explicitly (a DataFrame or a list of strings in), not read off type hints.
        warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
        mlflow.pyfunc.save_model(str(dest), python_model=str(CODE_FILE), model_config=spec, signature=signature,
                                 input_example=INPUT_EXAMPLE, code_paths=[str(_code_tree(Path(tmp)))],
                                 pip_requirements=pinned_requirements())
    return dest


def write_mlflow_model(store: Store, model_uri: str, spec: dict) -> list[str]:
    """Write the MLflow model files into the model's s3:// prefix, MLmodel last; returns the keys written.
    A name the weights use is never overwritten (MLflow's files and save_pretrained's do not overlap)."""
    if has_mlflow_model(store, model_uri):  # a rewrite: no reader sees old and new files mixed, no stale code
        store.delete(join(model_uri, MLMODEL))
        store.delete_prefix(join(model_uri, "code"))
    existing = {uri for uri, _, _ in store.list_meta(model_uri)}
    with tempfile.TemporaryDirectory() as tmp:
        local = save_mlflow_model(Path(tmp) / "mlflow-model", spec)
        files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.name == MLMODEL)
        written = []
        for path in files:
            rel = path.relative_to(local)
            uri = join(model_uri, rel.as_posix())
            ours = rel.as_posix() in MLFLOW_FILES or rel.parts[0] == "code"
            if uri in existing and not ours and store.get_bytes(uri) != path.read_bytes():
                raise FileExistsError(f"{uri}: the model prefix already has this file with other content; "
                                      "refusing to overwrite a file the weights may use")
            store.put_file(uri, path)
            written.append(uri)
    return written


def has_mlflow_model(store: Store, model_uri: str) -> bool:
    return store.exists(join(model_uri, MLMODEL))
