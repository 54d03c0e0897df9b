# Helpers shared by the rules. The logic lives in workflow_scripts/semtail/workflow.py,
# where it is tested without Snakemake; this file only binds it to `config`.

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from semtail import workflow as plan

plan.check_config(config)

DATASETS = list(config["datasets"])
METHODS = list(config["methods"])
SEEDS = [str(seed) for seed in config["seeds"]]


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    method="|".join(map(re.escape, METHODS)),
    seed=r"\d+",


def final_targets():
    return plan.final_targets(config)


def dataset_sources(wildcards):
    return plan.dataset_config(config, wildcards.dataset)["sources"]


def preprocess_parameters(wildcards):
    return plan.dataset_config(config, wildcards.dataset)["preprocess"]


def expected_sizes(wildcards):
    return plan.dataset_config(config, wildcards.dataset).get("expected", {})


def method_hyperparameters(wildcards):
    return plan.resolve_hyperparameters(config, wildcards.dataset, wildcards.method)


def train_inputs(wildcards):
    return plan.train_inputs(config, wildcards.dataset, wildcards.method, wildcards.seed)


def compute_device(wildcards):
    return config["compute"]["device"]


def gpus_per_job(wildcards):
    return plan.gpus_per_job(config)


def stage_code_version(stage):
    return lambda wildcards: plan.code_version(stage)


def method_code_version(wildcards):
    return plan.code_version(wildcards.method)


def run_inputs(wildcards):
    return plan.run_files(config, wildcards.dataset)


def resource(kind, stage):
    """A resource callable for `stage` (mem_mb, runtime, ...) sized from the dataset."""
    return lambda wildcards, attempt: plan.resources(
        config, stage, wildcards.dataset, attempt
    )[kind]


def weight_landscape_models(wildcards):
    return plan.weight_landscape_models(config, wildcards.dataset)
