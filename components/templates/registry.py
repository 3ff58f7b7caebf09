"""The template registry: a YAML file of tasks and their templates, loaded and checked before any work.

Every problem found is reported at once, each line naming the file, task and template, so a user
editing their own registry (cfg.templates.registry) fixes it in one go rather than one error per run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

KINDS = ("zero_shot", "few_shot", "options", "inverse")
SPECIAL = ("options", "exemplars")  # placeholders that are not record fields
MIN_TEMPLATES, MIN_INVERSE = 10, 2
TASK_KEYS = {"requires", "eval_template", "options", "few_shot", "templates"}
OPTIONAL_TASK_KEYS = {"references"}  # a list field of alternative targets, scored as extra references
TEMPLATE_KEYS = {"id", "kind", "inputs", "targets"}
OPTIONAL_TEMPLATE_KEYS = {"skip_when"}  # {field: value or [values]}: not used for records with those values
# A placeholder is {identifier}; any other brace ("{ return x; }") is literal text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RegistryError(ValueError):
    """A registry that cannot be used; one line per problem."""


@dataclass(frozen=True)
class Template:
    id: str
    task: str
    kind: str
    inputs: str
    targets: str
    skip_when: tuple[tuple[str, frozenset[str]], ...] = ()

    def skips(self, fields: dict) -> bool:
        return any(str(fields.get(f)) in values for f, values in self.skip_when)


@dataclass(frozen=True)
class Options:
    values: tuple[str, ...] = ()  # a fixed label set, in the order shown
    from_field: str | None = None  # or: gold + `distractors` other values of this field
    distractors: int = 0


@dataclass(frozen=True)
class Task:
    name: str
    requires: tuple[str, ...]
    eval_template: str
    templates: tuple[Template, ...]
    options: Options | None = None
    few_shot: str | None = None
    label: str | None = None  # the field an options template answers with
    references: str | None = None  # eval splits: this list field's values are extra references

    def template(self, template_id: str) -> Template:
        return next(t for t in self.templates if t.id == template_id)


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def _options(task: str, raw, requires: list[str], errors: list[str]) -> Options | None:
    if raw is None:
        return None
    if isinstance(raw, list):
        values = tuple(str(v) for v in raw)
        if len(values) < 2 or len(set(values)) != len(values):
            errors.append(f"task {task!r}: options must list at least 2 distinct labels, got {raw!r}")
        return Options(values=values)
    if isinstance(raw, dict):
        extra = set(raw) - {"from_field", "distractors"}
        field, n = raw.get("from_field"), raw.get("distractors", 3)
        if extra:
            errors.append(f"task {task!r}: unknown options keys {sorted(extra)} (use from_field, distractors)")
        if field not in requires:
            errors.append(f"task {task!r}: options.from_field {field!r} must be one of requires {requires}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            errors.append(f"task {task!r}: options.distractors must be an integer >= 1, got {n!r}")
            n = 1
        return Options(from_field=field, distractors=n)
    errors.append(f"task {task!r}: options must be a list of labels or {{from_field, distractors}}, got {raw!r}")
    return None


def _template(task: str, raw, requires: list[str], has_options: bool, errors: list[str]) -> Template | None:
    if not isinstance(raw, dict):
        errors.append(f"task {task!r}: a template must be a mapping with {sorted(TEMPLATE_KEYS)}, got {raw!r}")
        return None
    tid = str(raw.get("id", "?"))
    where = f"task {task!r} template {tid!r}"
    missing, extra = TEMPLATE_KEYS - set(raw), set(raw) - TEMPLATE_KEYS - OPTIONAL_TEMPLATE_KEYS
    if missing or extra:
        problems = [f"missing keys {sorted(missing)}"] * bool(missing)
        problems += [f"unknown keys {sorted(extra)}"] * bool(extra)
        errors.append(f"{where}: {', '.join(problems)} (a template has {sorted(TEMPLATE_KEYS)})")
        return None
    kind, inputs, targets = raw["kind"], raw["inputs"], raw["targets"]
    if kind not in KINDS:
        errors.append(f"{where}: unknown kind {kind!r} (use one of {', '.join(KINDS)})")
    if not isinstance(inputs, str) or not isinstance(targets, str):
        errors.append(f"{where}: inputs and targets must be strings")
        return None
    for part, text in (("inputs", inputs), ("targets", targets)):
        for name in placeholders(text):
            if name in SPECIAL and part == "inputs":
                continue
            if name not in requires:
                errors.append(f"{where}: unknown placeholder {{{name}}} in {part}; use a field from requires "
                              f"{requires}" + (" or {options}/{exemplars}" if part == "inputs" else ""))
    used = placeholders(inputs)
    if not any(p not in SPECIAL for p in used):
        errors.append(f"{where}: inputs use no record field")
    if not placeholders(targets):
        errors.append(f"{where}: targets use no record field")
    if ("exemplars" in used) != (kind == "few_shot"):
        errors.append(f"{where}: {{exemplars}} belongs in few_shot templates, and every few_shot template needs it")
    if ("options" in used) != (kind == "options"):
        errors.append(f"{where}: {{options}} belongs in options templates, and every options template needs it")
    if kind == "options":
        if not has_options:
            errors.append(f"{where}: an options template on a task without `options`")
        if not PLACEHOLDER.fullmatch(targets):
            errors.append(f"{where}: an options template's targets must be one field, the answer, got {targets!r}")
    skip = raw.get("skip_when") or {}
    if not isinstance(skip, dict) or any(f not in requires for f in skip):
        errors.append(f"{where}: skip_when must map fields from requires {requires} to a value or a list of values")
        skip = {}
    skip_when = tuple((f, frozenset(str(x) for x in (v if isinstance(v, list) else [v]))) for f, v in skip.items())
    return Template(tid, task, kind, inputs, targets, skip_when)


# No "__": a replay stream's folder is "replay__<task>" (components/shards/streams.py), so a task named
# "replay__x" would share the folder of the stream replay/x.
TASK_NAME = re.compile(r"(?=.{1,64}$)[A-Za-z0-9][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*")

def _task(name: str, raw, errors: list[str]) -> Task | None:
    if not TASK_NAME.fullmatch(str(name)):
        # Task names become shard folders and MLflow metric names: letters, digits, '_' and '-' only.
        errors.append(f"task {name!r}: a task name is letters, digits, '-' and single '_' between them (at most 64)")
        return None
    if not isinstance(raw, dict):
        errors.append(f"task {name!r}: must be a mapping with {sorted(TASK_KEYS)}")
        return None
    if set(raw) - TASK_KEYS - OPTIONAL_TASK_KEYS:
        errors.append(f"task {name!r}: unknown keys {sorted(set(raw) - TASK_KEYS - OPTIONAL_TASK_KEYS)}")
    references = raw.get("references")
    if references is not None and (not isinstance(references, str) or not references.isidentifier()):
        errors.append(f"task {name!r}: `references` must name one record field (a list of strings)")
    requires = raw.get("requires")
    if not isinstance(requires, list) or not requires or not all(isinstance(f, str) for f in requires):
        errors.append(f"task {name!r}: `requires` must be a non-empty list of field names")
        requires = []
    options = _options(name, raw.get("options"), requires, errors)
    templates = [t for t in (_template(name, r, requires, options is not None, errors)
                             for r in raw.get("templates") or []) if t is not None]
    kinds = [t.kind for t in templates]
    need = {"zero_shot": 1, "few_shot": 1, "inverse": MIN_INVERSE, "options": 1 if options else 0}
    if len(templates) < MIN_TEMPLATES:
        errors.append(f"task {name!r}: has {len(templates)} templates, needs at least {MIN_TEMPLATES}")
    for kind, n in need.items():
        if kinds.count(kind) < n:
            errors.append(f"task {name!r}: has {kinds.count(kind)} {kind} templates, needs at least {n}")
    few_shot = raw.get("few_shot")
    if "few_shot" in kinds:
        if not isinstance(few_shot, str) or not placeholders(few_shot):
            errors.append(f"task {name!r}: few_shot templates need a `few_shot` exemplar format using fields")
        else:
            for p in placeholders(few_shot):
                if p not in requires:
                    errors.append(f"task {name!r}: unknown placeholder {{{p}}} in few_shot; use a field from "
                                  f"requires {requires}")
    labels = {t.targets.strip("{}") for t in templates if t.kind == "options"}
    if len(labels) > 1:
        errors.append(f"task {name!r}: options templates answer with different fields {sorted(labels)}")
    label = next(iter(labels), None)
    if options and options.from_field and label and label != options.from_field:
        errors.append(f"task {name!r}: options templates answer {{{label}}} but options come from "
                      f"{options.from_field!r}")
    eval_id = raw.get("eval_template")
    match = [t for t in templates if t.id == eval_id]
    if not match:
        errors.append(f"task {name!r}: eval_template {eval_id!r} is not one of its templates")
    elif match[0].kind != "zero_shot":
        errors.append(f"task {name!r}: eval_template {eval_id!r} is {match[0].kind}, must be zero_shot")
    return Task(name, tuple(requires), str(eval_id), tuple(templates), options, few_shot, label, references)


def parse_registry(raw, where: str = "<registry>") -> dict[str, Task]:
    """Validate a parsed registry document; raises RegistryError listing every problem."""
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(f"{where}: a registry is a non-empty mapping of task name -> task")
    errors: list[str] = []
    tasks = {str(name): _task(str(name), body, errors) for name, body in raw.items()}
    seen: dict[str, str] = {}
    for task in (t for t in tasks.values() if t is not None):
        for t in task.templates:
            if t.id in seen:
                errors.append(f"task {task.name!r} template {t.id!r}: duplicate id (also in task {seen[t.id]!r})")
            seen.setdefault(t.id, task.name)
    if errors:
        raise RegistryError("\n".join([f"{where}: invalid template registry"] + [f"  {e}" for e in errors]))
    return tasks  # type: ignore[return-value]


def read_registry_text(path: str | None = None) -> tuple[str, str]:
    """(yaml text, where) of a local registry file, or the packaged one when path is None."""
    if path is None:
        return resources.files("components.templates").joinpath("registry.yaml").read_text(), "registry.yaml"
    try:
        return Path(path).read_text(), path
    except FileNotFoundError:
        raise RegistryError(f"{path}: template registry file not found (templates.registry)") from None


def load_registry(path: str | None = None, text: str | None = None, where: str | None = None) -> dict[str, Task]:
    """Load and validate a registry from YAML text, a local file, or the packaged registry.yaml."""
    if text is None:
        text, where = read_registry_text(path)
    where = where or "<registry>"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RegistryError(f"{where}: not valid YAML: {e}") from None
    return parse_registry(raw, where)


def registry_dict(registry: dict[str, Task]) -> dict:
    """The registry as plain data, for logging next to the run."""
    return {name: {"requires": list(t.requires), "eval_template": t.eval_template,
                   "options": (list(t.options.values) or {"from_field": t.options.from_field,
                                                           "distractors": t.options.distractors})
                   if t.options else None,
                   "few_shot": t.few_shot,
                   "templates": [{"id": x.id, "kind": x.kind, "inputs": x.inputs, "targets": x.targets,
                                  **({"skip_when": {f: sorted(v) for f, v in x.skip_when}} if x.skip_when else {})}
                                 for x in t.templates]}
            for name, t in registry.items()}
