"""Templates core: records -> (instruction, target) examples for every task they can feed, plus the
stream weights the loader mixes the train split by (components/templates/mixture.py).

Layout under <artifact_root>/templates: {train,validation,test}.parquet (EXAMPLE_SCHEMA) and
manifest.json, written last: a reader that finds the manifest finds complete splits.
Validation and test get one example per (record, task) from the task's zero-shot eval template.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from components.common.config import MixtuneConfig
from components.common.lineage import REPLAY_FROM_TAG, resolve_replay
from components.common.schemas import EXAMPLE_SCHEMA, SPLITS, read_records, read_rows, write_table
from components.common.storage import Store, join
from components.common.tracking import step_run
from components.templates.mixture import mix
from components.templates.registry import RegistryError, Task, load_registry, registry_dict
from components.templates.render import build_context, expand


@dataclass
class TemplatesResult:
    examples_uri: str
    dataset_version: str
    split_rows: dict[str, int] = field(default_factory=dict)
    template_counts: dict[str, int] = field(default_factory=dict)
    task_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> task -> examples
    tasks: dict[str, dict] = field(default_factory=dict)  # the train mixture report per task
    replay: dict = field(default_factory=dict)
    unused_records: dict = field(default_factory=dict)


def registry_for(cfg: MixtuneConfig, store: Store) -> dict[str, Task]:
    """The configured registry (a local file or an s3:// object), else the packaged one."""
    path = cfg.templates.registry
    if path and path.startswith("s3://"):
        try:
            text = store.get_bytes(path).decode()
        except FileNotFoundError:
            raise RegistryError(f"{path}: template registry not found (templates.registry)") from None
        registry = load_registry(text=text, where=path)
    else:
        registry = load_registry(path)
    unknown = sorted(set(cfg.templates.tasks or []) - set(registry))
    if unknown:
        raise RegistryError(f"templates.tasks: unknown tasks {unknown}; the registry has {sorted(registry)}")
    return registry


def replay_prefix(uri: str) -> str:
    """An earlier templates output named by its prefix or by its train.parquet: the prefix."""
    return uri.removesuffix("/train.parquet")


def read_replay(store: Store, uri: str) -> list[dict]:
    """Train examples of an earlier templates output (its prefix, or its train.parquet)."""
    target = join(replay_prefix(uri), "train.parquet")
    try:
        return read_rows(store, target)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"templates.mixture.replay: {target} not found; point examples_uri at a previous run's "
            f"templates output (s3://.../templates)") from None


def build_examples(cfg: MixtuneConfig, records: dict[str, list[dict]], registry: dict[str, Task],
                   replay: list[dict] | None = None,
                   old_weights: dict[str, float] | None = None) -> tuple[dict[str, list[dict]], dict, dict]:
    """(examples per split, mixture report, unused records) from records per split."""
    t = cfg.templates
    ctx = build_context(records["train"], registry, t.seed, t.variants_per_record, t.few_shot_examples, t.tasks,
                        tuple(t.kinds), t.max_input_chars or 4 * cfg.model.max_source_length)
    examples, unused = {}, {}
    for split in SPLITS:
        examples[split], unused[split] = expand(records[split], split, ctx)
    examples["train"], mixture = mix(examples["train"], t.mixture, replay,
                                     default_total=training_budget(cfg, examples["train"]), old_weights=old_weights)
    unused_report = {"count": sum(len(v) for v in unused.values()),
                     "by_split": {s: len(v) for s, v in unused.items()},
                     "sample": sorted(i for v in unused.values() for i in v)[:20]}
    return examples, mixture, unused_report


CHARS_PER_TOKEN = 4  # the same rule of thumb as templates.max_input_chars


def training_budget(cfg: MixtuneConfig, train: list[dict]) -> int:
    """Examples training will consume, which the mixture report plans for: max_steps x global batch.
    Packed, a batch counts rows, so rows x examples per row, estimated from the examples' lengths
    (~4 characters per token, each capped at its row budget; rows ~90 % full). Before tokenizing,
    that is an estimate; the train step logs what it really drew."""
    tr, m = cfg.train, cfg.model
    rows = tr.max_steps * tr.micro_batch_size * tr.gradient_accumulation_steps * tr.num_processes
    if not tr.packing or not train:
        return rows
    src = sum(min(len(e["inputs"]) / CHARS_PER_TOKEN + 1, m.max_source_length) for e in train) / len(train)
    tgt = sum(min(len(e["targets"]) / CHARS_PER_TOKEN + 1, m.max_target_length) for e in train) / len(train)
    if m.architecture == "causal":  # one budget: prompt + target in one sequence
        per_row = (m.max_source_length + m.max_target_length) / (src + tgt)
    else:
        per_row = min(m.max_source_length / src, m.max_target_length / tgt)
    return round(rows * max(1.0, 0.9 * per_row))


def run_templates(cfg: MixtuneConfig, records_uri: str, artifact_root: str, pipeline_run: str) -> TemplatesResult:
    import mlflow

    store = Store(cfg.storage)
    registry = registry_for(cfg, store)
    upstream = store.get_json(join(records_uri, "manifest.json"))
    # Resolved once, here: `from: champion` names a version through its lineage (components/common/lineage.py).
    source = resolve_replay(cfg, store)
    replay_uri = source.uri
    replay = read_replay(store, replay_uri) if replay_uri else None
    old_manifest = store.get_json(join(replay_prefix(replay_uri), "manifest.json")) if replay_uri else {}
    out = join(artifact_root, "templates")
    store.delete(join(out, "manifest.json"))  # a retry unpublishes first: the manifest is written last
    with step_run(cfg, pipeline_run, "templates"):
        start = time.perf_counter()
        records = {split: read_records(store, join(records_uri, f"{split}.parquet")) for split in SPLITS}
        examples, mixture, unused = build_examples(cfg, records, registry, replay,
                                                   old_manifest.get("mixture", {}).get("weights"))
        mixture["replay_uri"] = replay_uri
        used: Counter = Counter()
        task_rows: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            used.update(e["template_id"] for e in examples[split])
            task_rows[split] = dict(sorted(Counter(e["task"] for e in examples[split]).items()))
            write_table(store, join(out, f"{split}.parquet"), examples[split], EXAMPLE_SCHEMA)
        # Every dataset version the train split draws from: this one, plus the replayed run's (recursively).
        versions = [upstream["dataset_version"]]
        if replay_uri:
            old = old_manifest.get("dataset_versions", [old_manifest["dataset_version"]])
            versions += [v for v in old if v not in versions]
        replay_info = {**source.as_dict(), "ratio": cfg.templates.mixture.replay.ratio if replay_uri else 0.0,
                       "examples": mixture["replay_examples"], "planned_draws": mixture["replayed"],
                       "by_task": {t: v["replayed"] for t, v in mixture["tasks"].items() if v["replayed"]}}
        result = TemplatesResult(
            out, upstream["dataset_version"], {s: len(examples[s]) for s in SPLITS}, dict(sorted(used.items())),
            task_rows, mixture["tasks"], replay_info, unused)
        store.put_json(join(out, "manifest.json"), {**asdict(result), "mixture": mixture, "dataset_versions": versions})

        mlflow.log_metrics({f"examples_{s}": float(n) for s, n in result.split_rows.items()})
        mlflow.log_metrics({f"mixture_weight_{s.replace('/', '_')}": w for s, w in mixture["weights"].items()})
        mlflow.log_metrics({f"mixture_count_{t}": float(v["count"]) for t, v in mixture["tasks"].items()})
        mlflow.log_metrics({"replay_examples": float(mixture["replayed"]), "unused_records": float(unused["count"]),
                            "templates_seconds": time.perf_counter() - start})
        mlflow.log_dict(registry_dict(registry), "templates/registry.json")
        mlflow.log_dict(mixture, "templates/mixture.json")
        mlflow.set_tags({"mixtune.dataset_version": result.dataset_version,
                         "mixtune.dataset_versions": ",".join(versions),
                         "mixtune.replay_uri": replay_uri or "none", REPLAY_FROM_TAG: source.version or "none"})
    return result
