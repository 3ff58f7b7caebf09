"""Templates core: each record becomes one or more (inputs, targets) examples.

The template for a record is picked by a hash of (seed, record id, variant), so the choice is stable
when other records are added or removed, and evaluation splits always get one fixed template each.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources

import yaml

from components.common.config import MixtuneConfig
from components.common.schemas import EXAMPLE_SCHEMA, SPLITS, read_rows, write_table
from components.common.storage import Store, join
from components.common.tracking import step_run


@dataclass(frozen=True)
class Template:
    id: str
    task: str
    template: str

    def render(self, record: dict) -> str:
        return self.template.replace("{dialogue}", record["dialogue"])


@dataclass
class TemplatesResult:
    examples_uri: str
    dataset_version: str
    split_rows: dict[str, int] = field(default_factory=dict)
    template_counts: dict[str, int] = field(default_factory=dict)


def load_registry(text: str | None = None) -> dict[str, list[Template]]:
    """Parse the template registry (the packaged registry.yaml by default) and check it."""
    if text is None:
        text = resources.files("components.templates").joinpath("registry.yaml").read_text()
    raw = yaml.safe_load(text) or {}
    registry: dict[str, list[Template]] = {}
    for task, entries in raw.items():
        templates = [Template(e["id"], task, e["template"]) for e in entries]
        for t in templates:
            if "{dialogue}" not in t.template:
                raise ValueError(f"template {t.id} of task {task} has no {{dialogue}} placeholder")
        if len({t.id for t in templates}) != len(templates):
            raise ValueError(f"task {task}: template ids are not unique")
        registry[task] = templates
    return registry


def pick(templates: list[Template], seed: int, record_id: str, k: int) -> list[Template]:
    """k distinct templates for a record, ordered by a seeded hash: deterministic and stable."""
    def score(t: Template) -> bytes:
        return hashlib.sha256(f"{seed}|{record_id}|{t.id}".encode()).digest()

    return sorted(templates, key=score)[: min(k, len(templates))]


def expand(records: list[dict], split: str, registry: dict[str, list[Template]], cfg: MixtuneConfig) -> list[dict]:
    k = cfg.templates.variants_per_record if split == "train" else 1
    out = []
    for rec in records:
        if rec["task"] not in registry:
            raise KeyError(f"record {rec['id']}: no templates for task {rec['task']!r}")
        for n, t in enumerate(pick(registry[rec["task"]], cfg.templates.seed, rec["id"], k)):
            out.append({"id": f"{rec['id']}#{n}", "record_id": rec["id"], "task": rec["task"],
                        "template_id": t.id, "inputs": t.render(rec), "targets": rec["target"]})
    return out


def run_templates(cfg: MixtuneConfig, records_uri: str, artifact_root: str, pipeline_run: str) -> TemplatesResult:
    import mlflow

    store = Store(cfg.storage)
    registry = load_registry()
    upstream = store.get_json(join(records_uri, "manifest.json"))
    out = join(artifact_root, "templates")
    with step_run(cfg, pipeline_run, "templates"):
        split_rows, used = {}, Counter()
        for split in SPLITS:
            examples = expand(read_rows(store, join(records_uri, f"{split}.parquet")), split, registry, cfg)
            used.update(e["template_id"] for e in examples)
            split_rows[split] = len(examples)
            write_table(store, join(out, f"{split}.parquet"), examples, EXAMPLE_SCHEMA)
        result = TemplatesResult(out, upstream["dataset_version"], split_rows, dict(sorted(used.items())))
        store.put_json(join(out, "manifest.json"), asdict(result))
        mlflow.log_metrics({f"examples_{k}": v for k, v in split_rows.items()})
        mlflow.log_dict({t: [x.template for x in ts] for t, ts in registry.items()}, "templates.json")
        mlflow.set_tag("mixtune.dataset_version", result.dataset_version)
    return result
