"""The mixtune DAG: ingest → templates → shards → train → evaluate → register (→ deploy, when
serve.kubernetes.enabled, run only if register promoted a new champion).

The same `@dsl.pipeline` runs on one machine through kfp.local and compiles to KFP YAML for a
cluster. Steps pass S3 URIs; the config travels as a JSON parameter (it holds no secrets).
No `from __future__ import annotations` here: KFP reads the pipeline's real type annotations.
"""

from kfp import dsl

from components.common.config import MixtuneConfig
from components.deploy import component as deploy_c
from components.evaluate import component as evaluate_c
from components.ingest import component as ingest_c
from components.register import component as register_c
from components.shards import component as shards_c
from components.templates import component as templates_c
from components.train import component as train_c

PIPELINE_NAME = "mixtune"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def build_pipeline(cfg: MixtuneConfig, scheduled: bool = False):
    """The pipeline function, with each step bound to its configured image.

    scheduled=True builds the variant a KFP recurring run starts: its only parameter is the config,
    and each run is named by KFP's run id (recurring runs cannot vary parameters per run in KFP v2)."""
    ingest_op = ingest_c.build(cfg.images.cpu)
    templates_op = templates_c.build(cfg.images.cpu)
    shards_op = shards_c.build(cfg.images.cpu)
    prepare_op, partition_op, merge_op = shards_c.build_fanout(cfg.images.cpu)
    train_op = train_c.build(cfg.images.gpu)
    evaluate_op = evaluate_c.build(cfg.images.cpu)
    register_op = register_c.build(cfg.images.cpu)
    deploy_op = deploy_c.build(cfg.images.cpu)

    def steps(config_json, pipeline_run, artifact_root):
        # Every task gets the run id, so KFP's cache (keyed on all inputs) matches only within one run
        # (a retry); across runs the train step reuses by content instead (components/common/reuse.py).
        common = dict(config_json=config_json, pipeline_run=pipeline_run, artifact_root=artifact_root)
        ingest = ingest_op(**common).set_display_name("ingest")
        # Its real input is the bucket's content, which KFP cannot see: new files must be read.
        ingest.set_caching_options(False)
        templates = templates_op(**common, records_uri=ingest.outputs["records_uri"])
        templates.set_display_name("templates")
        tasks = [ingest, templates]
        if cfg.shards.partitions == 1:
            shards = shards_op(**common, examples_uri=templates.outputs["examples_uri"]).set_display_name("shards")
        else:
            # Partition tasks take only pipeline parameters and their index (see components/shards/fanout.py).
            prepare = prepare_op(**common, examples_uri=templates.outputs["examples_uri"])
            prepare.set_display_name("shards-prepare")
            with dsl.ParallelFor(items=[str(k) for k in range(cfg.shards.partitions)]) as partition:
                part = partition_op(**common, partition=partition)
                part.set_display_name("shards-partition").after(prepare)
                # Its input is the plan in S3, which KFP cannot see.
                part.set_caching_options(False)
            shards = merge_op(**common, partials=dsl.Collected(part.output)).set_display_name("shards")
            tasks += [prepare, part]
        train = train_op(**common, shards_uri=shards.outputs["shards_uri"]).set_display_name("train")
        if cfg.train.device == "cuda":
            train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(cfg.train.num_processes)
        evaluate = evaluate_op(
            **common,
            examples_uri=templates.outputs["examples_uri"],
            model_uri=train.outputs["model_uri"],
            base_model_uri=train.outputs["base_model_uri"],
        ).set_display_name("evaluate")
        register = register_op(
            config_json=config_json,
            pipeline_run=pipeline_run,
            model_uri=train.outputs["model_uri"],
            eval_uri=evaluate.outputs["eval_uri"],
            train_run_id=train.outputs["mlflow_run_id"],
        ).set_display_name("register")
        # Registration changes the registry: never serve it from KFP's cache.
        register.set_caching_options(False)
        for task in tasks + [shards, train, evaluate, register]:
            with_cluster_credentials(task, cfg)
        if cfg.serve.kubernetes.enabled:
            deploy_champion(config_json, pipeline_run, register)

    def deploy_champion(config_json, pipeline_run, register):
        # Only when the champion moved; the step rolls the InferenceService to it, or undoes the promotion.
        with dsl.If(register.outputs["promoted"] == True, name="champion-moved"):  # noqa: E712 (a KFP condition)
            deploy = deploy_op(config_json=config_json, pipeline_run=pipeline_run,
                               version=register.outputs["version"]).set_display_name("deploy")
            deploy.set_caching_options(False)  # it acts on the cluster and the registry
            with_cluster_credentials(deploy, cfg)

    description = "FLAN-style multi-task instruction fine-tuning"
    if scheduled:
        @dsl.pipeline(name=PIPELINE_NAME, description=description + " (scheduled)")
        def mixtune(config_json: str):
            steps(config_json, dsl.PIPELINE_JOB_ID_PLACEHOLDER, "")
    else:
        @dsl.pipeline(name=PIPELINE_NAME, description=description)
        def mixtune(config_json: str, pipeline_run: str, artifact_root: str = ""):
            steps(config_json, pipeline_run, artifact_root)

    return mixtune


def with_cluster_credentials(task, cfg: MixtuneConfig):
    """Env from the configured Secrets, by reference: the compiled YAML names a Secret, never a value.
    Without them, pods get S3 from their service account's role (IRSA, workload identity)."""
    if not (cfg.cluster.s3_secret or cfg.cluster.mlflow_secret):
        return task
    from kfp import kubernetes

    if cfg.cluster.s3_secret:
        kubernetes.use_secret_as_env(task, cfg.cluster.s3_secret, {k: k for k in S3_SECRET_KEYS})
    if cfg.cluster.mlflow_secret:
        kubernetes.use_secret_as_env(task, cfg.cluster.mlflow_secret, {k: k for k in MLFLOW_SECRET_KEYS},
                                    optional=True)
    return task


def compile_pipeline(cfg: MixtuneConfig, output: str, scheduled: bool = False) -> str:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(cfg, scheduled), package_path=output)
    return output
