"""Rendering: records become (inputs, targets) examples, one or more per (record, task).

Every choice (templates, option distractors, few-shot exemplars) comes from a hash of the seed and
the record id, never from iteration order. A record's templates depend on nothing else, so they do
not change when records are added; distractors and exemplars also depend on the train split's labels
and exemplar pool. Substitution is one pass over pre-split template text: braces in data are safe.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache

from components.templates.registry import PLACEHOLDER, Task, Template

# Exemplars come from the shortest quarter of a task's train records (50..1000 of them), so prompts stay
# short without every prompt showing the same few exemplars.
POOL_FRACTION, POOL_MIN, POOL_MAX = 0.25, 50, 1000


@lru_cache(maxsize=None)
def compile_text(text: str) -> tuple[tuple[str, bool], ...]:
    """Template text as (literal, False) and (field name, True) parts."""
    parts, pos = [], 0
    for m in PLACEHOLDER.finditer(text):
        parts += [(text[pos:m.start()], False), (m.group(1), True)]
        pos = m.end()
    parts.append((text[pos:], False))
    return tuple(p for p in parts if p[1] or p[0])


def fill(text: str, values: dict[str, str]) -> str:
    return "".join(values[p] if is_field else p for p, is_field in compile_text(text))


def value_text(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "\n".join(str(x) for x in v)
    return "" if v is None else str(v)


def has_value(v) -> bool:
    if isinstance(v, str):
        return bool(v.strip())
    return v is not None and (not isinstance(v, (list, tuple, dict)) or len(v) > 0)


def digest(*parts) -> bytes:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()


def seeded_rng(*parts) -> random.Random:
    return random.Random(int.from_bytes(digest(*parts), "big"))


def tasks_for(record: dict, registry: dict[str, Task], only: list[str] | None = None) -> list[str]:
    """Tasks a record feeds: its required fields are non-empty, allowed by config and by its source."""
    allowed, fields, out = record.get("tasks"), record["fields"], []
    for name, task in registry.items():
        if (only is None or name in only) and (allowed is None or name in allowed):
            for f in task.requires:
                if not has_value(fields.get(f)):
                    break
            else:
                out.append(name)
    return out


@dataclass
class Context:
    """What rendering needs beyond one record, built from the TRAIN split only."""

    registry: dict[str, Task]
    seed: int
    variants: int
    shots: int
    only: list[str] | None = None
    kinds: tuple[str, ...] = ("zero_shot", "few_shot", "options", "inverse")
    max_input_chars: int | None = None  # a longer few-shot prompt would lose its own input to truncation
    pools: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # task -> [(record id, exemplar)]
    labels: dict[str, list[str]] = field(default_factory=dict)  # task -> distinct from_field values


def build_context(train: list[dict], registry: dict[str, Task], seed: int, variants: int, shots: int,
                  only: list[str] | None = None, kinds: tuple[str, ...] | None = None,
                  max_input_chars: int | None = None) -> Context:
    ctx = Context(registry, seed, variants, shots, only, tuple(kinds or Context.kinds), max_input_chars)
    by_task: dict[str, list[dict]] = {name: [] for name in registry}
    for rec in train:
        for name in tasks_for(rec, registry, only):
            by_task[name].append(rec)
    for name, recs in by_task.items():
        task = registry[name]
        if task.few_shot:
            ctx.pools[name] = few_shot_pool(task, recs)
        if task.options and task.options.from_field:
            ctx.labels[name] = sorted({value_text(r["fields"][task.options.from_field]) for r in recs})
    return ctx


def few_shot_pool(task: Task, recs: list[dict]) -> list[tuple[str, str]]:
    """(record id, exemplar text) of the shortest records. With a fixed label set, the shortest of each
    label in equal numbers: short reviews are mostly 5-star, and exemplars must not teach that bias."""
    label = task.label if task.options and task.options.values else None
    shots = sorted((len(text), r["id"], text, value_text(r["fields"][label]) if label else "")
                   for r in recs for text in [fill(task.few_shot, _values(task, r))])
    size = min(POOL_MAX, max(POOL_MIN, int(len(shots) * POOL_FRACTION)))
    if label is None:
        return [(rid, text) for _, rid, text, _ in shots[:size]]
    by_label: dict[str, list[tuple[str, str]]] = {}
    for _, rid, text, value in shots:  # shortest first within each label
        by_label.setdefault(value, []).append((rid, text))
    quota = max(1, size // len(by_label)) if by_label else 0
    return sorted((x for group in by_label.values() for x in group[:quota]), key=lambda x: (len(x[1]), x[0]))


def _values(task: Task, rec: dict) -> dict[str, str]:
    return {f: value_text(rec["fields"][f]) for f in task.requires}


def options_for(task: Task, rec: dict, ctx: Context) -> list[str] | None:
    """The answer choices shown to this record, gold included; None when gold is not a valid label."""
    spec = task.options
    gold = value_text(rec["fields"][task.label or spec.from_field])
    if spec.values:
        return list(spec.values) if gold in spec.values else None
    rng = seeded_rng(ctx.seed, rec["id"], task.name, "options")
    pool, n, seen = ctx.labels.get(task.name, []), spec.distractors, {gold.casefold()}
    chosen: list[str] = []
    if len(pool) <= 4 * n + 4:  # small label set: sample among all other labels
        others = [v for v in pool if v.casefold() not in seen]
        chosen = rng.sample(others, min(n, len(others)))
    else:  # large label set: draw indices, skipping the gold and repeats
        for _ in range(20 * n):
            v = pool[rng.randrange(len(pool))]
            if v.casefold() not in seen:
                seen.add(v.casefold())
                chosen.append(v)
                if len(chosen) == n:
                    break
    choices = [gold] + chosen
    rng.shuffle(choices)
    return choices


def exemplars_for(task: Task, rec_id: str, ctx: Context) -> list[str]:
    """Up to `shots` exemplars from the task's short train records, never the record itself."""
    pool = ctx.pools.get(task.name, [])
    rng = seeded_rng(ctx.seed, rec_id, task.name, "exemplars")
    picked = rng.sample(range(len(pool)), min(ctx.shots + 1, len(pool)))
    return [pool[i][1] for i in picked if pool[i][0] != rec_id][: ctx.shots]


@lru_cache(maxsize=None)
def _id_bytes(template_id: str) -> bytes:
    return template_id.encode()


def pick_templates(templates: list[Template], seed: int, rec_id: str, task: str, k: int) -> list[Template]:
    """The k templates of lowest hash(seed, record, task, template): stable as records come and go."""
    prefix = hashlib.blake2b(f"{seed}|{rec_id}|{task}|".encode(), digest_size=8)

    def key(t: Template) -> bytes:
        h = prefix.copy()  # the same digest as digest(seed, rec_id, task, t.id), without re-hashing the prefix
        h.update(_id_bytes(t.id))
        return h.digest()

    return sorted(templates, key=key)[:k]


def render(task: Task, t: Template, rec: dict, ctx: Context, n: int, options: list[str] | None = None) -> dict:
    values = _values(task, rec)
    if t.kind == "options":
        values["options"] = "OPTIONS:\n" + "\n".join(f"- {o}" for o in options or [])
    if t.kind == "few_shot":
        shots = exemplars_for(task, rec["id"], ctx)
        values["exemplars"] = "\n\n".join(shots)
        # Exemplars come first and truncation cuts the end: drop exemplars until the record's own input fits.
        while ctx.max_input_chars and shots and len(fill(t.inputs, values)) > ctx.max_input_chars:
            shots.pop()
            values["exemplars"] = "\n\n".join(shots)
    return {"id": f"{rec['id']}#{task.name}#{n}", "record_id": rec["id"], "task": task.name,
            "template_id": t.id, "template_kind": t.kind,
            "inputs": fill(t.inputs, values), "targets": fill(t.targets, values)}


def references_for(task: Task, rec: dict, target: str) -> list[str]:
    """The target first, then the distinct other references a record carries (DialogSum test has three)."""
    refs = [target]
    extra = rec["fields"].get(task.references) if task.references else None
    for v in extra if isinstance(extra, list) else []:
        if isinstance(v, str) and v.strip() and v.strip() not in refs:
            refs.append(v.strip())
    return refs


def expand_record(rec: dict, split: str, ctx: Context) -> list[dict]:
    out = []
    for name in tasks_for(rec, ctx.registry, ctx.only):
        task = ctx.registry[name]
        if split != "train":
            row = render(task, task.template(task.eval_template), rec, ctx, 0)
            out.append({**row, "references": references_for(task, rec, row["targets"])})
            continue
        # Options templates need a gold answer among the labels, few-shot ones another train record.
        labelled = task.options is not None and (
            not task.options.values or value_text(rec["fields"][task.label]) in task.options.values)
        has_exemplar = any(rid != rec["id"] for rid, _ in ctx.pools.get(name, [])[:2])
        candidates = [t for t in task.templates if t.kind in ctx.kinds and (t.kind != "options" or labelled)
                      and (t.kind != "few_shot" or has_exemplar) and not (t.skip_when and t.skips(rec["fields"]))]
        for n, t in enumerate(pick_templates(candidates, ctx.seed, rec["id"], name, ctx.variants)):
            out.append(render(task, t, rec, ctx, n, options_for(task, rec, ctx) if t.kind == "options" else None))
    return out


def expand(records: list[dict], split: str, ctx: Context) -> tuple[list[dict], list[str]]:
    """(examples, ids of records that feed no task) for one split."""
    examples, unused = [], []
    for rec in records:
        rows = expand_record(rec, split, ctx)
        if not rows:
            unused.append(rec["id"])
        examples += rows
    return examples, unused
