"""The one mixtune config: YAML validated into a typed object, every knob with a default.

Secrets never live here: S3 and MLflow credentials come from the environment (AWS_* variables,
service-account roles, Kubernetes Secrets), so a config can be logged and compiled into a pipeline.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.common.config_keys import key_lines, nearest_key


def _version_text(value):
    # `--set infer.model=2` reads 2 as a YAML integer: a version number, kept as the text the registry uses.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


AliasOrVersion = Annotated[str, BeforeValidator(_version_text)]  # `champion`, or a version number


class _Strict(BaseModel):
    # Unknown keys are an error: a typo in a knob must not silently fall back to the default.
    model_config = ConfigDict(extra="forbid")


# Built-in input formats. A preset is a container plus a field mapping (components/ingest/presets.py);
# the bare containers take a `mapping`, so a new export needs configuration, not code.
PRESETS = ("chatlog", "dialogsum", "samsum", "tweetsumm", "ibm_customer_care", "yelp", "amazon_alexa",
           "wnut17", "codexglue_java_cs")
CONTAINERS = ("jsonl", "json", "csv", "tsv", "parquet", "turns_csv", "turns_parquet")
Format = Literal["chatlog", "dialogsum", "samsum", "tweetsumm", "ibm_customer_care", "yelp", "amazon_alexa",
                 "wnut17", "codexglue_java_cs", "jsonl", "json", "csv", "tsv", "parquet", "turns_csv",
                 "turns_parquet"]
PiiType = Literal["email", "phone", "card", "iban", "ip", "url_token", "handle"]


class FieldMapping(_Strict):
    """Where a record's fields live in a source row. Paths are dotted (`notes.summary`, `turns.0.text`);
    `a|b` tries a, then b. Every field named here is required unless listed in `optional`."""

    id: str | None = Field(default=None, description="path of the row id; None = file name + row number")
    dialogue: str | None = Field(default=None, description="a text field with one 'Speaker: text' turn per line")
    messages: str | None = Field(default=None, description="a list of message objects (chat exports)")
    speaker: str = Field(default="role", description="path of the speaker inside a message (or turn row)")
    text: str = Field(default="content", description="path of the text inside a message (or turn row)")
    speakers: dict[str, str] | None = Field(
        default=None, description="raw speaker (lower-case) -> shown name; a speaker not listed is quarantined")
    skip_speakers: list[str] = Field(default_factory=lambda: ["system"], description="speakers left out")
    html: bool = Field(default=False, description="message bodies are HTML: strip tags, unescape entities")
    fields: dict[str, str] = Field(default_factory=dict, description="record field -> path, e.g. summary: notes.summary")
    optional: list[str] = Field(default_factory=list, description="record fields that may be missing or empty")
    conversation: str = Field(default="conversation_id", description="turns_* formats: the column grouping turns")
    timestamp: str | None = Field(default=None, description="turns_* formats: turns are ordered by this column")


class SourceConfig(_Strict):
    path: str = Field(description="local path, glob, or s3://bucket/key-or-prefix; 'sample' = generated chat logs")
    format: Format = "chatlog"
    name: str | None = Field(default=None, description="source name recorded on each row (default: file stem)")
    mapping: FieldMapping | None = Field(default=None, description="required for bare containers; replaces a preset's")
    records_path: str | None = Field(default=None, description="json: dotted path of the record list in the document")
    encoding: str = Field(default="utf-8", description="text encoding; a UTF-8/UTF-16 byte-order mark wins")
    tasks: list[str] | None = Field(default=None, description="tasks this source feeds; None = every task it can")
    redact_pii: bool = True

    @model_validator(mode="after")
    def _mapping(self) -> "SourceConfig":
        if self.format in CONTAINERS and self.mapping is None:
            raise ValueError(f"format {self.format!r} is a bare container: give a `mapping` for it")
        return self


class SampleConfig(_Strict):
    conversations: int = Field(default=1500, ge=10)
    broken_rows: int = Field(default=8, ge=0, description="malformed rows mixed in, as real exports have")
    seed: int = 7


class PiiConfig(_Strict):
    """Redaction before anything is stored downstream: matches become typed placeholders (<EMAIL>)."""

    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: ["email", "phone", "card", "iban", "ip", "url_token", "handle"])
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN"],
                                     description="regions tried for phone numbers written without +country code")


class DedupConfig(_Strict):
    exact: bool = Field(default=True, description="drop rows whose normalised text hash was already kept")
    near: bool = Field(default=True, description="drop near-duplicates (MinHash LSH on word shingles)")
    threshold: float = Field(default=0.85, gt=0.0, le=1.0, description="Jaccard similarity counted as a duplicate")
    num_perm: int = Field(default=64, ge=16, le=512)
    shingle_words: int = Field(default=5, ge=1)


class SummarySupportConfig(_Strict):
    """Do the reference summaries belong to their dialogues? Support = the share of a summary's content
    words its dialogue has (components/ingest/support.py); a row is judged by its best summary."""

    quarantine_below: float = Field(default=0.1, ge=0.0, lt=1.0, description="a row whose best summary has "
                                    "less support is quarantined: it belongs to another conversation (0 = off)")
    weak_below: float = Field(default=0.25, ge=0.0, lt=1.0, description="support under this is weak: honest "
                              "abstractive summaries are rarely so; moved ones nearly always")
    max_weak_fraction: float = Field(default=0.2, gt=0.0, le=1.0, description="a source with more weak rows "
                                     "stops the ingest: its summaries are attached to the wrong conversations "
                                     "(1 = never stop)")

    @model_validator(mode="after")
    def _order(self) -> "SummarySupportConfig":
        if self.weak_below < self.quarantine_below:
            raise ValueError(f"weak_below ({self.weak_below}) must be at least quarantine_below "
                             f"({self.quarantine_below}): a quarantined row is a weak one")
        return self


class DataConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(path="sample")])
    sample: SampleConfig = SampleConfig()
    validation_fraction: float = Field(default=0.05, ge=0.0, lt=0.5)
    test_fraction: float = Field(default=0.05, gt=0.0, lt=0.5)
    max_row_bytes: int = Field(default=1_000_000, gt=0, description="a raw row bigger than this is quarantined")
    max_field_chars: int = Field(default=20_000, gt=0, description="any text field longer than this is quarantined")
    max_target_chars: int = Field(default=2_000, gt=0, description="summary/topic longer than this is quarantined")
    min_turns: int = Field(default=2, ge=1)
    min_speakers: int = Field(default=2, ge=1, description="fewer distinct speakers = a one-sided dialogue")
    pii: PiiConfig = PiiConfig()
    dedup: DedupConfig = DedupConfig()
    summary_support: SummarySupportConfig = SummarySupportConfig()
    incremental: bool = Field(default=True, description="re-read only source objects not seen before (by size/ETag)")
    workers: int = Field(default=0, ge=0, description="parallel parse processes; 0 = one per usable core "
                         "(set it in a pod with a CPU quota: the quota is not visible as cores)")


class ReplayConfig(_Strict):
    """Rehearse old tasks when retraining: mix the train examples a model was trained on back in, either
    named by the registry (`from`: its lineage) or by hand (`examples_uri`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: AliasOrVersion | None = Field(
        default=None, alias="from", description="`champion` (or another alias, or a version number) of "
        "registry.model_name: replay the examples that version was trained on (its templates output, the "
        "replay it carried included), found through the lineage on the version. While the alias is unset "
        "(the loop's first round) there is nothing to replay")
    examples_uri: str | None = Field(default=None, description="a previous run's templates output (s3://.../templates)")
    ratio: float = Field(default=0.3, ge=0.0, lt=1.0, description="fraction of the train mixture taken from it")

    @model_validator(mode="after")
    def _one_source(self) -> "ReplayConfig":
        if self.from_ is not None and self.examples_uri:
            raise ValueError("set one of templates.mixture.replay.from (the registry's lineage) and "
                             "replay.examples_uri (by hand), not both")
        return self


class MixtureConfig(_Strict):
    """Examples-proportional mixing as in seqio/FLAN: rate of task t proportional to min(n_t, cap)^(1/temperature).
    The rates become stream weights the loader samples by (train.loader.mixture_weights overrides them)."""

    cap: int = Field(default=3000, ge=1, description="K: examples of a task counted at most")
    temperature: float = Field(default=1.0, gt=0.0, description="T > 1 flattens the mixture towards uniform")
    total_examples: int | None = Field(
        default=None, ge=1, description="examples the mixture report plans for (draws, epochs per task); "
        "None = the training budget (max_steps x global batch). The loader samples by weight at load time")
    replay: ReplayConfig = ReplayConfig()


class TemplatesConfig(_Strict):
    variants_per_record: int = Field(default=1, ge=1, description="templated copies per train record")
    seed: int = 13
    registry: str | None = Field(default=None, description="a template registry YAML; None = the packaged one")
    tasks: list[str] | None = Field(default=None, description="tasks to build; None = every task with data")
    few_shot_examples: int = Field(default=2, ge=1, le=8, description="exemplars in a few-shot template")
    kinds: list[Literal["zero_shot", "few_shot", "options", "inverse"]] = Field(
        default_factory=lambda: ["zero_shot", "few_shot", "options", "inverse"],
        description="template kinds used for train examples (validation/test always use the eval template)")
    max_input_chars: int | None = Field(
        default=None, ge=64, description="few-shot prompts drop exemplars to fit; None = 4 x model.max_source_length")
    mixture: MixtureConfig = MixtureConfig()


MODELS_SCHEME = "models:/"
_MODELS_URI = re.compile(r"models:/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z][A-Za-z0-9_-]*)|/([0-9]+))")


def parse_models_uri(ref: str) -> tuple[str, str]:
    """'models:/<name>@<alias>' or 'models:/<name>/<version>' -> (name, alias or version)."""
    m = _MODELS_URI.fullmatch(ref)
    if m is None:
        raise ValueError(f"{ref!r}: a registered model is models:/<name>@<alias> or models:/<name>/<version>")
    return m.group(1), m.group(2) or m.group(3)


class TinyModelConfig(_Strict):
    """A small T5 built from a config (random init), for machines without hub access."""

    d_model: int = 128
    d_ff: int = 512
    d_kv: int = 32
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    vocab_size: int = Field(default=4000, ge=300)
    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0, description="T5's dropout; a tiny model trained for "
                                "a few hundred steps on a small set learns faster with less")


class ModelConfig(_Strict):
    base: str = Field(default="tiny", description="'tiny', a Hugging Face id, a local path, an s3:// prefix, or a "
                      "registered model: models:/<name>@<alias> or models:/<name>/<version> (e.g. retrain the "
                      "champion on new chat logs; the shards step pins the alias to a version for the whole run)")
    architecture: Literal["auto", "seq2seq", "causal"] = Field(
        default="auto", description="seq2seq (encoder-decoder, e.g. FLAN-T5) or causal (decoder-only: the prompt "
        "and the target in one sequence, loss on the target only). auto = the base model's config decides; "
        "'tiny' builds a T5 for seq2seq, a Llama-style decoder for causal")
    initial_base: str | None = Field(
        default=None, description="when base is a models:/ alias that is not set yet (the first round of a "
        "retraining loop: no champion), start from this instead ('tiny', a hub id, a path); None = an error")
    tokenizer: str | None = Field(default=None, description="defaults to the base model's tokenizer")
    tiny: TinyModelConfig = TinyModelConfig()
    max_source_length: int = Field(default=384, ge=16)
    max_target_length: int = Field(default=96, ge=8)

    @field_validator("base", "tokenizer")
    @classmethod
    def _registry_ref(cls, value: str | None) -> str | None:
        if value and value.startswith(MODELS_SCHEME):
            parse_models_uri(value)  # raises ValueError with the expected forms
        return value


class ShardsConfig(_Strict):
    rows_per_shard: int = Field(default=5000, ge=1, description="rows in every shard of a stream but its last")
    batch_size: int = Field(default=1000, ge=1, description="rows per tokenizer call")
    workers: int = Field(default=0, ge=0, description="tokenizer processes; 0 = one per usable core "
                         "(set it in a pod with a CPU quota: the quota is not visible as cores)")
    partitions: int = Field(default=1, ge=1, le=1024, description="input partitions tokenized by parallel "
                            "pipeline tasks (a KFP ParallelFor, each task with `workers` processes); "
                            "1 = one task. Use more on a cluster when one pod's cores are too few")


class LoaderConfig(_Strict):
    """How training reads the shards: streamed from S3 into a local cache, mixed at load time."""

    mixture_weights: dict[str, float] | None = Field(
        default=None, description="stream -> weight, replacing the templates step's (a task name, or "
        "replay/<task>); changing it needs no re-tokenization. None = the weights in the shards manifest")
    shuffle_block_shards: int = Field(default=4, ge=1, description="shards of a stream shuffled together "
                                      "(more = better shuffle, more shards held in memory)")
    cache_dir: str | None = Field(default=None, description="local shard cache; None = the step's work dir")


class LoraConfig(_Strict):
    """Low-rank adapters (PEFT) instead of full fine-tuning; the exported model has them merged."""

    enabled: bool = False
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        default=None, description="module names adapted (T5: q, k, v, o, wi, wo; Llama: q_proj, k_proj, v_proj, "
        "o_proj, ...). None = the attention projections: q, k, v, o on T5, q_proj..o_proj on decoders")


class KubernetesTrainConfig(_Strict):
    """The training job handed to Kubeflow Trainer when train.launcher is trainjob or pytorchjob."""

    namespace: str = "mixtune"
    num_nodes: int = Field(default=2, ge=1)
    gpus_per_node: int = Field(default=1, ge=0, description="processes per node = GPUs (0: CPU nodes)")
    cpu_processes_per_node: int = Field(default=2, ge=1, description="processes per node when gpus_per_node is 0")
    runtime: str = Field(default="torch-distributed", description="TrainJob: the ClusterTrainingRuntime name")
    trainjob_overrides: Literal["runtimePatches", "podTemplateOverrides"] = Field(
        default="runtimePatches", description="TrainJob field that carries our pod settings: runtimePatches "
        "(Kubeflow Trainer v2.2+) or podTemplateOverrides (v2.0-2.1)")
    cpu: str = "8"
    memory: str = "64Gi"
    service_account: str = Field(default="mixtune-train", description="training pods: its role gives S3 "
                                 "(IRSA / workload identity); infra/ creates it")
    credentials_secret: str | None = Field(
        default=None, description="a Secret with AWS_* (and MLflow) keys, mounted as env; None = service-account role")
    poll_seconds: float = Field(default=30.0, gt=0)
    timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0)


class TrainConfig(_Strict):
    num_processes: int = Field(default=2, ge=1, description="local processes (one per GPU on GPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_steps: int = Field(default=300, ge=1)
    micro_batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=30, ge=0)
    gradient_clipping: float = Field(default=1.0, gt=0)
    packing: bool = Field(default=True, description="pack several examples per row, each attending only within "
                          "itself (components/train/segment_attention.py); micro_batch_size then counts rows of "
                          "max_source_length/max_target_length tokens (decoder-only: their sum), not examples. "
                          "false: one padded example per row")
    checkpoint_every: int = Field(default=100, ge=0, description="save a resumable checkpoint to S3 every K "
                                  "optimizer steps (0 = only on SIGTERM); a rerun resumes from the latest")
    checkpoint_keep: int = Field(default=2, ge=1, description="complete checkpoints kept; older ones are deleted")
    checkpoint_uri: str | None = Field(default=None, description="s3:// prefix for checkpoints; None = "
                                       "<artifact_root>/train/checkpoints (a rerun of the same pipeline run resumes)")
    resume: bool = Field(default=True, description="resume from the latest complete checkpoint when there is one")
    reuse: bool = Field(default=True, description="reuse the model an earlier run trained from the same shards, "
                        "config and code instead of training again (components/common/reuse.py)")
    loader: LoaderConfig = LoaderConfig()
    lora: LoraConfig = LoraConfig()
    launcher: Literal["local", "trainjob", "pytorchjob"] = Field(
        default="local", description="local = torchrun in the step's pod; trainjob/pytorchjob = Kubeflow Trainer")
    kubernetes: KubernetesTrainConfig = KubernetesTrainConfig()
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    deepspeed_config: str | None = Field(default=None, description="a DeepSpeed JSON file; overrides the above")
    log_every: int = Field(default=10, ge=1)
    peak_tflops: float | None = Field(default=None, gt=0, description="a device's peak TFLOP/s, for MFU (model "
                                      "FLOPs utilization); None = a known GPU's dense bf16 peak (train/flops.py)")
    seed: int = 42
    cpu_shm_allreduce: bool = Field(
        default=False, description="CPU only: DeepSpeed's shared-memory allreduce op (g++ build ~50 s, cached)"
    )


MetricFamily = Literal["rouge", "rating", "ner", "code"]


GENERATION_KEYS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "repetition_penalty", "length_penalty",
                   "copy_facts")


def _moved_to_generation(raw, section: str):
    if isinstance(raw, dict):
        moved = sorted(set(GENERATION_KEYS) & set(raw))
        if moved:
            raise ValueError(f"{', '.join(moved)} moved to the top-level generation section "
                             f"({', '.join('generation.' + k for k in moved)}): evaluate, infer and serving "
                             f"generate with the same settings, so the scores describe the served model")
    return raw


class GenerationConfig(_Strict):
    """How every model generates: evaluate (candidate, base and champion alike), batch inference and the served
    MLflow model, so the scores the gate reads describe what production returns. Recorded with the scores."""

    num_beams: int = Field(default=1, ge=1, description="1 = greedy")
    max_new_tokens: int = Field(default=96, ge=1)
    no_repeat_ngram_size: int = Field(default=0, ge=0, description="no n-gram of this size appears twice in an "
                                      "output (0 = off); 3-4 stops 'order 2222…' loops")
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=3.0, description="> 1 lowers the score of tokens "
                                      "already in the output (or the input, for a decoder-only model)")
    length_penalty: float = Field(default=1.0, description="beam search only: > 1 favours longer outputs")
    copy_facts: bool = Field(default=False, description="a number, id or name the model writes must be copied "
                             "whole from its input (components/common/fact_copy.py): stated facts occur in the "
                             "dialogue; whether they are in the right place is still the model's")


class FaithfulnessConfig(_Strict):
    """The summarization family's checks beside ROUGE (components/evaluate/faithfulness.py)."""

    tasks: list[str] = Field(default_factory=lambda: ["summarization"], description="tasks whose outputs are "
                             "checked for unsupported facts, name coverage and degenerate output")
    min_length_ratio: float = Field(default=0.25, gt=0.0, le=1.0, description="an output shorter than this x "
                                    "the shortest reference (in words) is degenerate")
    max_length_ratio: float = Field(default=3.0, ge=1.0, description="an output longer than this x the longest "
                                    "reference is degenerate")
    max_repeat_share: float = Field(default=0.5, gt=0.0, le=1.0, description="an output in which one token, or "
                                    "repeats of one n-gram, make up more than this share of the words loops")
    copy_overlap: float = Field(default=0.9, gt=0.0, le=1.0, description="an output whose word 8-grams are this "
                                "share or more from the prompt, and that is as long as a dialogue, is a copy")


class BootstrapConfig(_Strict):
    """Percentile bootstrap over evaluation examples, for intervals and the gate's paired deltas."""

    resamples: int = Field(default=1000, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0


class EvaluateConfig(_Strict):
    tasks: list[str] = Field(default_factory=lambda: ["summarization"], description="tasks scored, each with its own metrics")
    max_examples: int = Field(default=200, ge=1, description="per task (per source with per_source): the first "
                              "N test examples in the order of a hash of their id")
    per_source: bool = Field(default=False, description="max_examples holds for each source of a task, so old "
                             "chat logs beside new ones get enough examples for the gate to hold them to a tolerance")
    include_champion_set: bool = Field(
        default=True, description="also score the examples the champion was gated on (its eval_set.parquet, "
        "through the registry): tasks and sources the new data lacks are still checked for forgetting. "
        "Not with eval_set_uri (a frozen set is used as it is)")
    eval_set_uri: str | None = Field(
        default=None, description="a frozen evaluation set (examples Parquet, s3:// or local path) used instead "
                                  "of this run's test split, so runs on new data are scored on the same set")
    metrics: dict[str, MetricFamily] = Field(
        default_factory=dict, description="task -> metric family; defaults: summarization/dialogue_topic rouge, "
                                          "review_rating rating, ner ner, code_translation code, others rouge")
    bootstrap: BootstrapConfig = BootstrapConfig()
    batch_size: int = Field(default=32, ge=1)
    worst_examples: int = Field(default=5, ge=0, description="per task: the worst, best and random examples "
                                "shown side by side in the report")
    faithfulness: FaithfulnessConfig = FaithfulnessConfig()

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, raw):
        return _moved_to_generation(raw, "evaluate")


class GateConfig(_Strict):
    """When a candidate may become champion: it must beat the baseline (the champion, or the base model
    before the first promotion) on the primary metric by a margin the confidence interval supports, and
    no scored task may drop by more than a tolerance against the champion (and the base model)."""

    primary_task: str | None = Field(default=None, description="default: the first of evaluate.tasks")
    metric: str | None = Field(default=None, description="default: the primary metric of the task's family")
    min_improvement: float = Field(default=0.0, ge=0.0, description="the delta CI's lower bound must exceed this")
    improve_on: Literal["task", "new_data"] = Field(
        default="task", description="where the candidate must beat the baseline: 'task' (all of the primary "
        "task's examples) or 'new_data' (its examples from this run's own test split; the others, the old chats "
        "the champion's gated set brings back, are held by the drop checks). The retraining loop wants "
        "new_data: a gain on a new batch is otherwise lost in the noise of the old chats beside it")
    max_unsupported: float = Field(default=10.0, ge=0.0, le=100.0, description="ceiling on the primary task's "
                                   "unsupported-fact rate (% of the summaries' facts the dialogue does not support)")
    max_degenerate: float = Field(default=2.0, ge=0.0, le=100.0, description="ceiling on the primary task's "
                                  "degenerate-output rate (% of outputs empty, looping, a prompt copy or far off length)")
    faithfulness_tolerance: float = Field(default=1.0, ge=0.0, description="the unsupported and degenerate rates "
                                          "may not rise against the champion by more than this (points) where the "
                                          "paired interval says the rise is real (its lower bound above 0)")
    min_primary: float = Field(default=20.0, ge=0.0, description="before the first champion, when the base model "
                               "is unusable (see base_max_degenerate): the candidate's primary metric must reach this")
    base_max_degenerate: float = Field(default=50.0, ge=0.0, le=100.0, description="a base model with more "
                                       "degenerate outputs than this (%) is no baseline: 'better than the base' "
                                       "means nothing, so the absolute floor and ceilings decide alone")
    max_drop: float = Field(default=1.0, ge=0.0, description="largest allowed drop of any task's primary metric: "
                            "a drop fails when it is beyond this and real (the paired interval below zero)")
    require_resolution: bool = Field(default=True, description="refuse when a slice's paired interval is wider "
                                     "than its tolerance (the set cannot tell such a drop from noise); the verdict "
                                     "says how many examples would resolve it")
    max_drop_per_task: dict[str, float] = Field(default_factory=dict, description="task -> tolerance override")
    check_base: bool = Field(default=True, description="also refuse a candidate that drops below the base model")
    check_sources: bool = Field(
        default=True, description="a task fed by several sources (record id prefixes, e.g. the old chat logs and "
        "the new ones) must also hold on each source, with the task's tolerance")
    source_min_examples: int = Field(default=20, ge=1, description="a source with fewer scored examples is "
                                     "reported but not gated (its mean is too noisy to hold to a tolerance)")


class RegistryConfig(_Strict):
    model_name: str = "mixtune-summarizer"
    gate: GateConfig = GateConfig()

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, raw):
        if isinstance(raw, dict):
            moved = sorted({"metric", "min_improvement"} & set(raw))
            if moved:
                raise ValueError(f"{', '.join(moved)} moved to registry.gate ({', '.join('gate.' + k for k in moved)})")
        return raw


class InferConfig(_Strict):
    """Batch inference: summarize unlabeled chat logs with a registered model."""

    model: AliasOrVersion = Field(default="champion", description="an alias of registry.model_name, or a version number")
    prompt: str = Field(default="Summarize this dialogue:\n{dialogue}",
                        description="the summarization task's eval template: what the model was scored with")
    batch_size: int = Field(default=32, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, raw):
        return _moved_to_generation(raw, "infer")


class ServeKubernetesConfig(_Strict):
    """The champion on Kubernetes: a KServe InferenceService (infra/base/serving/) that the DAG's deploy step
    moves to each new champion (and `mixtune rollback` moves back), always to a version's immutable S3 prefix."""

    enabled: bool = Field(default=False, description="add the deploy step after register (run only when the "
                          "champion moved); rollback redeploys too")
    name: str = Field(default="mixtune-summarizer", description="the InferenceService's name")
    namespace: str = "mixtune"
    mode: Literal["serverless", "standard"] = Field(
        default="serverless", description="KServe deployment mode: serverless (Knative: a canary revision with "
        "canary_percent of the traffic first) or standard (a Deployment: rolling update, maxUnavailable 0)")
    canary_percent: int = Field(default=10, ge=1, le=99, description="serverless: traffic to the new version "
                                "until it is Ready and answers a smoke request")
    ready_timeout_seconds: float = Field(default=900.0, gt=0, description="how long the new version may take "
                                         "to become Ready and answer; after it the alias moves back and the step fails")
    poll_seconds: float = Field(default=10.0, gt=0)
    service_account: str = Field(default="mixtune-serve", description="predictor pods: its role gives read "
                                 "access to the model prefixes (IRSA); infra/ creates it")
    cpu: str = Field(default="2", description="CPU request of a predictor pod")
    memory: str = Field(default="4Gi", description="memory request and limit of a predictor pod")
    gpus: int = Field(default=0, ge=0, description="GPUs per predictor pod: 0 = the CPU image (images.cpu), "
                      "more = the CUDA image (images.gpu)")
    min_replicas: int = Field(default=1, ge=0, description="predictor pods kept up (0 lets serverless scale to "
                              "zero: the first request then waits for a model load)")
    max_replicas: int = Field(default=3, ge=1)
    smoke_address: Literal["auto", "cluster-local", "external"] = Field(
        default="auto", description="where the smoke request goes: the in-cluster Service name, or the URL in "
        "the InferenceService status (through the ingress; it must resolve where the deploy runs); auto = "
        "cluster-local inside a pod (the DAG's step), external elsewhere (`mixtune rollback` from a laptop)")
    smoke_timeout_seconds: float = Field(default=120.0, gt=0, description="one smoke request (a cold model "
                                         "generates slowly)")

    @model_validator(mode="after")
    def _replicas(self) -> "ServeKubernetesConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"serve.kubernetes.max_replicas ({self.max_replicas}) is below min_replicas "
                             f"({self.min_replicas})")
        return self


class ServeConfig(_Strict):
    """Online serving (`mixtune serve`, `python -m components.serve`): dynamic batching, alias following."""

    model: AliasOrVersion = Field(default="champion", description="an alias to follow (the server loads the version it "
                       "names and swaps when it moves) or a version number (served as is)")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 = a free port")
    max_batch: int = Field(default=16, ge=1, description="inputs generated together (requests that arrive "
                           "within max_wait_ms are batched up to this many inputs)")
    max_wait_ms: float = Field(default=10.0, ge=0, description="how long the first request of a batch waits "
                               "for others; 0 = no dynamic batching (each request alone)")
    poll_seconds: float = Field(default=10.0, gt=0, description="how often the registry is asked where the "
                                "alias points")
    max_inputs: int = Field(default=64, ge=1, description="inputs in one request; more is a 400")
    max_input_chars: int = Field(default=20_000, ge=1, description="characters in one input; more is a 400")
    max_body_bytes: int = Field(default=2_000_000, ge=1024, description="request body size; more is a 413")
    max_queue: int = Field(default=512, ge=1, description="inputs waiting to be generated; beyond it new "
                           "requests get 503 at once instead of waiting")
    request_timeout_seconds: float = Field(default=60.0, gt=0, description="a request not answered in this "
                                           "time gets 503")
    kubernetes: ServeKubernetesConfig = ServeKubernetesConfig()


class StorageConfig(_Strict):
    bucket: str = "mixtune"
    prefix: str = Field(default="", description="key prefix inside the bucket, no leading slash")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint; None = AWS (or AWS_ENDPOINT_URL)")
    region: str = "us-east-1"
    max_attempts: int = Field(default=12, ge=1, description="attempts per S3 call (botocore standard retries: "
                              "exponential backoff with jitter, up to 20 s apart): ~1-2 min of outage ridden out")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if any(p in (".", "..", "") or "\\" in p for p in v.split("/")) and v:
            raise ValueError(f"prefix {v!r} must be key segments joined by '/', without '.', '..', '//' or '\\'")
        return v


class TrackingConfig(_Strict):
    uri: str = Field(default="sqlite:///.mixtune/mlflow.db", description="MLflow tracking URI")
    experiment: str = "mixtune"
    artifact_location: str | None = Field(
        default=None, description="where a new experiment keeps artifacts; None = <bucket>/<prefix>/mlflow-artifacts "
        "for a local store, the server's own (proxied through it) for an http(s) tracking server")


class ImagesConfig(_Strict):
    cpu: str = Field(default="mixtune/cpu:latest", description="registry/repository:tag for data and eval steps")
    gpu: str = Field(default="mixtune/train-cuda:latest", description="registry/repository:tag for training")


class TriggerConfig(_Strict):
    """New chat logs start a run: `mixtune submit --if-new-data` (what an Argo Events sensor or a cron runs
    on a cluster) and `mixtune watch` (the embedded default) share these settings and one claim per batch."""

    claims_prefix: str = Field(default="triggers", description="key prefix (under storage.prefix) of the "
                               "claim objects that make two events for the same files start one run")
    settle_seconds: float = Field(default=30.0, ge=0, description="wait until the source listing stops "
                                  "changing for this long, so a burst of uploads starts one run")
    settle_max_seconds: float = Field(default=600.0, ge=0, description="give up waiting for a quiet listing")
    watch_sources: list[str] | None = Field(
        default=None, description="names (data.sources[].name) of the sources whose new files start a run; "
        "None = every source")
    new_files_only: bool = Field(
        default=False, description="a run ingests only the watched sources' files no earlier claim holds (each "
        "batch is trained on once; older batches come back through replay); the other sources are read in "
        "full. False = every file of every source")
    poll_seconds: float = Field(default=10.0, ge=0.1, description="how often `mixtune watch` lists the sources")


class ClusterConfig(_Strict):
    """Where `mixtune submit` sends the pipeline, and what its pods get from Kubernetes."""

    kfp_host: str = Field(default="http://ml-pipeline.kubeflow.svc.cluster.local:8888",
                          description="KFP API server (in-cluster default; a port-forward URL from a laptop)")
    namespace: str = Field(default="mixtune", description="KFP namespace (multi-user KFP: the profile)")
    experiment: str = "mixtune"
    service_account: str = Field(default="mixtune-pipeline", description="service account of the run's "
                                 "pods: RBAC to create training jobs; its cloud role gives S3 in production")
    s3_secret: str | None = Field(default=None, description="a Secret with AWS_ACCESS_KEY_ID / "
                                  "AWS_SECRET_ACCESS_KEY, set as env on every step; None = the role only")
    mlflow_secret: str | None = Field(default=None, description="a Secret with MLFLOW_TRACKING_USERNAME / "
                                      "MLFLOW_TRACKING_PASSWORD (an authenticated MLflow server)")
    schedule: str = Field(default="0 3 * * *", description="cron for `mixtune submit --schedule` "
                          "(KFP recurring run, 5 or 6 fields)")
    trigger: TriggerConfig = TriggerConfig()

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) not in (5, 6):
            raise ValueError(f"schedule {v!r} is not a cron expression (5 or 6 space-separated fields)")
        return v


class MixtuneConfig(_Strict):
    data: DataConfig = DataConfig()
    templates: TemplatesConfig = TemplatesConfig()
    model: ModelConfig = ModelConfig()
    shards: ShardsConfig = ShardsConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    generation: GenerationConfig = GenerationConfig()
    infer: InferConfig = InferConfig()
    serve: ServeConfig = ServeConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    images: ImagesConfig = ImagesConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _lengths(self) -> "MixtuneConfig":
        if self.data.validation_fraction + self.data.test_fraction >= 0.9:
            raise ValueError("data.validation_fraction + data.test_fraction must leave room for training")
        gate = self.registry.gate
        if gate.primary_task is not None and gate.primary_task not in self.evaluate.tasks:
            raise ValueError(f"registry.gate.primary_task {gate.primary_task!r} is not in evaluate.tasks "
                             f"{self.evaluate.tasks}")
        unknown = sorted(set(gate.max_drop_per_task) - set(self.evaluate.tasks))
        if unknown:
            raise ValueError(f"registry.gate.max_drop_per_task names tasks not in evaluate.tasks: {unknown}")
        if not self.evaluate.tasks:
            raise ValueError("evaluate.tasks must name at least one task")
        return self

    @model_validator(mode="after")
    def _watched_sources(self) -> "MixtuneConfig":
        watched = self.cluster.trigger.watch_sources
        names = [s.name for s in self.data.sources if s.name]
        unknown = [w for w in watched or [] if w not in names]
        if unknown:
            raise ValueError(f"cluster.trigger.watch_sources names no source in data.sources: {unknown}; the "
                             f"source names are {names or 'none (give the sources a `name`)'}")
        if watched is not None and not watched:
            raise ValueError("cluster.trigger.watch_sources is empty: name at least one source, or leave it "
                             "unset to watch every source")
        return self

    @property
    def primary_task(self) -> str:
        return self.registry.gate.primary_task or self.evaluate.tasks[0]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and each bad key."""


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> MixtuneConfig:
    """Read a YAML config (or the defaults when path is None), apply dotted overrides, validate."""
    raw: dict = {}
    where, lines = "<defaults>", {}
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text()
            raw = yaml.safe_load(text) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
        lines = key_lines(text)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                kind = "a list" if isinstance(node, list) else f"a value ({node!r})"
                raise ConfigError(f"--set {dotted}: {'.'.join(parents[:i + 1])} is {kind}, not a section: "
                                  f"set it in the config file")
        node[leaf] = value
    origin = {k: f"{where} line {n}" for k, n in lines.items()} | {k: f"--set {k}" for k in overrides or {}}
    return parse_config(raw, where, origin)


def parse_config(raw: dict, where: str = "<config>", origin: dict[str, str] | None = None) -> MixtuneConfig:
    """Validate; each error names its key, where it was set (`--set K` or the file's line) and, for an
    unknown key, the nearest valid one."""
    try:
        return MixtuneConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{where}: invalid config"]
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            source = next(((origin or {})[k] for k in _prefixes(key) if k in (origin or {})), None)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "extra_forbidden":
                near = nearest_key(MixtuneConfig, err["loc"])
                msg += f"; did you mean {near}?" if near else ""
            lines.append(f"  {key}: {msg}" + (f" (from {source})" if source else ""))
        raise ConfigError("\n".join(lines)) from None


def _prefixes(key: str) -> list[str]:
    """"a.b.c" -> ["a.b.c", "a.b", "a"]: the most precise origin known for a key wins."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def config_from_json(text: str) -> MixtuneConfig:
    """How a step reads the config it was handed as a pipeline parameter."""
    return MixtuneConfig.model_validate_json(text)
