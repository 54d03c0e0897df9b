# Helpers shared by the rules. The logic lives in workflow_scripts/semtail/ (plan.py, search.py,
# job_resources.py), where it is tested without Snakemake; this file only binds it to `config`.

import functools
import re
import sys
from pathlib import Path

from snakemake.exceptions import IncompleteCheckpointException, WorkflowError
from snakemake.logging import logger

# The workflow's scripts folder, from this file's own folder: the same whether this workflow runs
# as the main Snakefile or as a module of another one, from any working directory.
WORKFLOW_SCRIPTS = (
    Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent
    / "workflow_scripts"
)
if not WORKFLOW_SCRIPTS.is_dir():
    raise WorkflowError(
        f"{WORKFLOW_SCRIPTS} is not a folder: use this workflow from a local checkout "
        "(a module's snakefile: a path, not github(...)); see docs/running.md"
    )
sys.path.insert(0, str(WORKFLOW_SCRIPTS))

from semtail import config_schema, job_resources, plan, provenance, search, selection
from semtail.device import visible_gpu_ids

plan.put_first_on_pythonpath(str(WORKFLOW_SCRIPTS))
plan.quote_interpreter_for_shell()
# The code versions of the jobs' params, kept for the next call beside Snakemake's own records.
provenance.keep_code_versions_in(Path(".snakemake") / "semtail")

# Text that --config gave where numbers belong is converted, then the config is validated against
# the schema (which has no defaults to fill in), a problem named in a few lines.
config_schema.check_against_schema(
    config,
    config_schema.load_schema(workflow.source_path("../schemas/config.schema.yaml")),
)

plan.check_config(config)
plan.check_compare(config)
search.check_tuning(config)
# profiles/slurm ships placeholders for the partition and account: stop before submitting anything.
plan.check_cluster_resources(
    {
        name: getattr(value, "raw", value)
        for name, value in (workflow.resource_settings.default_resources or {}).items()
    }
)

# Benchmark records carry the job's declared resources, which resources.csv compares with the
# measurement (semtail/resource_check.py); jobs on cluster nodes inherit the setting.
workflow.output_settings.benchmark_extended = True

DATASETS = list(config["datasets"])
METHODS = list(config["methods"])
SEEDS = [str(seed) for seed in config["seeds"]]
RESULTS = plan.results_root(config)
LOGS = plan.logs_root(config)


def results(path):
    """A path under the results folder: results/, or results/<experiment>/."""
    return f"{RESULTS}/{path}"


def logs(path):
    return f"{LOGS}/{path}"


def from_config(function, *wildcard_names, **keywords):
    """A rule's input, params or resources function: `function(config, <the named wildcards>,
    **keywords)`, for a function of semtail that takes the config and wildcard values.
    """

    def of_wildcards(wildcards):
        values = (getattr(wildcards, name) for name in wildcard_names)
        return function(config, *values, **keywords)

    return of_wildcards


def model_file(path):
    """A run's model file, deleted once read by every job that needs it under `model_files: temporary`."""
    return temp(path) if plan.model_files_are_temporary(config) else path


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    method="|".join(map(re.escape, METHODS)),
    seed=r"\d+",
    run=rf"seed\d+|{plan.SEED_INDEPENDENT}",
    split=f"[0-9a-f]{{{plan.SPLIT_KEY_LENGTH}}}",
    candidate=f"[0-9a-f]{{{search.NAME_LENGTH}}}",


def job_line(text):
    """A rule's `message:`, its job's one line on the console, with the profile's `quiet: [reason]`
    (profiles/default). Without it (`--quiet host`, `--workflow-profile none`, other profiles)
    none, so that Snakemake prints each job's full block: input, output, log, wildcards, reason.
    """
    quiet = {
        getattr(value, "name", str(value)).lower()
        for value in workflow.output_settings.quiet or ()
    }
    return text if "reason" in quiet else None


def final_targets():
    targets = (
        plan.final_targets(config)
        + search.tuning_targets(config)
        + [results("resources.csv")]
    )
    if plan.building_report(sys.argv):
        targets, left_out = plan.report_targets(
            targets, reading_every_job=(results("resources.csv"),)
        )
        if left_out:
            logger.warning(left_out)
    return targets


def refuse_unconfigured_dataset(wildcards):
    path = f"{wildcards.folder}/{wildcards.unconfigured}/{wildcards.path}"
    return plan.refuse_unconfigured_dataset(config, path, wildcards.unconfigured)


def dataset_sources(wildcards):
    return plan.dataset_config(config, wildcards.dataset)["sources"]


def expected_sizes(wildcards):
    return plan.dataset_config(config, wildcards.dataset).get("expected", {})


def method_hyperparameters(wildcards):
    return hyperparameters_of(wildcards.dataset, wildcards.method)


def hyperparameters_of(dataset, name):
    """A searched method's train jobs read the choice from selected.yaml, the others the config."""
    if search.is_tuned(config, dataset, name):
        return selection.read_selected(
            selected_hyperparameters(dataset, name), dataset, name
        )["hyperparameters"]
    return plan.resolve_hyperparameters(config, dataset, name)


def selected_hyperparameters(dataset, name):
    """selected.yaml of a searched method, once its selection ran: asking for it makes the job
    wait for the selection, and be planned anew after it."""
    return checkpoints.select_hyperparameters.get(
        dataset=dataset, method=name
    ).output.selected


def current_runs(wildcards):
    """What each run of a dataset's tables and figures must have been trained with now: its
    hyperparameters (a search's choice) and its method's code version. Those jobs refuse a
    metrics.json that records others (semtail.run_metrics.check_runs_current)."""
    follow_selections(wildcards.dataset, config["methods"])
    return {
        name: {
            "hyperparameters": hyperparameters_of(wildcards.dataset, name),
            "code_version": plan.method_code_version(config, name),
        }
        for name in config["methods"]
    }


def follow_selections(dataset, names, candidate=False):
    """Make a job wait for the selections it follows from (its own method's, its rerank base's,
    a dataset's every one for the tables), and be planned anew once they ran. selected.yaml is
    deliberately no input: rewritten with the same choice (a new candidate that lost), it must
    rerun nothing. Without this, Snakemake would keep the reason to run that it gave a job
    before the selection ran ("input updated by another job"), even when the train job before
    it turned out not to need a rerun."""
    for name in search.selections_behind(config, dataset, names, candidate):
        checkpoints.select_hyperparameters.get(dataset=dataset, method=name)


def run_seed(wildcards):
    """The seed of a run folder: seed<N> gives N, seed-independent None (and a folder that does
    not fit the method is an error)."""
    return plan.run_seed(config, wildcards.dataset, wildcards.method, wildcards.run)


def train_inputs(wildcards):
    """The split, and rerank's base model; see follow_selections. The train job of a searched
    method reruns when its choice changes, through its hyperparameters param."""
    follow_selections(wildcards.dataset, [wildcards.method])
    return plan.train_inputs(
        config, wildcards.dataset, wildcards.method, run_seed(wildcards)
    )


def candidate(wildcards):
    return search.find_candidate(
        config, wildcards.dataset, wildcards.method, wildcards.candidate
    )


def candidate_seed(wildcards):
    """The seed of a candidate's job: its `seed` wildcard (tune_candidate_seed), else the first
    search seed (tune_candidate)."""
    seed = getattr(wildcards, "seed", None)
    return search.search_seeds(config)[0] if seed is None else int(seed)


def candidate_inputs(wildcards):
    follow_selections(wildcards.dataset, [wildcards.method], candidate=True)
    return search.candidate_inputs(
        config, wildcards.dataset, wildcards.method, candidate_seed(wildcards)
    )


def candidate_checkpoint(wildcards):
    return search.candidate_checkpoint(
        config,
        wildcards.dataset,
        wildcards.method,
        wildcards.candidate,
        candidate_seed(wildcards),
    )


def base_model_of_run(wildcards):
    """The base model of a run on a base, which its scoring reads; and the evaluation of a run
    follows its train job's selections (follow_selections)."""
    follow_selections(wildcards.dataset, [wildcards.method])
    return plan.base_model_input(
        config, wildcards.dataset, wildcards.method, run_seed(wildcards)
    )


def candidate_settings(wildcards):
    return candidate(wildcards).settings


def candidate_hyperparameters(wildcards):
    return search.candidate_hyperparameters(
        config, wildcards.dataset, wildcards.method, candidate(wildcards)
    )


def selection_metric(wildcards):
    return search.selection_rule(config, wildcards.method)["metric"]


def selection_guards(wildcards):
    return search.selection_rule(config, wildcards.method)["within"]


def grid_edge_warnings(wildcards):
    """summary.md's lines on searches whose choice sits on the edge of their grid, read from each
    selected.yaml once the selections ran: a param, so that a rewritten selected.yaml with the
    same choice reruns no table."""
    follow_selections(wildcards.dataset, config["methods"])
    return selection.grid_edge_warnings(
        [
            selection.read_selected(path)
            for path in search.selected_files(config, wildcards.dataset)
        ]
    )


def stage_code_version(stage):
    return lambda wildcards: provenance.code_version(stage)


def resource_version(name):
    return lambda wildcards: provenance.resource_version(name)


def run_inputs(wildcards):
    follow_selections(wildcards.dataset, config["methods"])
    return plan.run_files(config, wildcards.dataset)


def resource(kind, stage, hyperparameters=None, rule_name=None):
    """A callable for a rule's threads, mem_mb or runtime (semtail/job_resources.py:resources), sized
    from the dataset: from the stats.json among the job's inputs once preprocessing wrote it
    (Snakemake evaluates resources again right before a job starts), else from the config's
    `expected` sizes. A retry (`attempt` 2) asks for twice the memory and time. A training job
    is sized by its `hyperparameters` (a function of the wildcards: a train job's, which a
    search selected; a candidate's). The runtime is the device's the job will use (job_on_gpu)
    of the rule (`rule_name`, by default the stage's name)."""

    # The rule's name as --set-resources gives it: prefixed where this workflow is a module.
    full_name = workflow.modifier.modify_rulename(rule_name or stage)

    def value(wildcards, input, attempt):
        if getattr(input, "stats", None):
            stats_file = input.stats
        elif getattr(input, "train", None):
            stats_file = str(Path(input.train).with_name("stats.json"))
        else:
            stats_file = None
        return job_resources.resources(
            config,
            stage,
            wildcards.dataset,
            attempt,
            method=getattr(wildcards, "method", None),
            stats_file=stats_file,
            hyperparameters=sizing_hyperparameters(hyperparameters, wildcards),
            on_gpu=job_on_gpu(
                full_name,
                job_resources.job_gpus(
                    config, stage, getattr(wildcards, "method", None)
                ),
            ),
        )[kind]

    return value


def set_resource(rule_name, name):
    """A resource that --set-resources gave a rule, or None."""
    try:
        value = workflow.resource_settings.overwrite_resources[rule_name][name]
    except (KeyError, TypeError):
        return None
    return getattr(value, "value", value)


@functools.cache
def visible_gpu_count():
    return len(visible_gpu_ids())


def job_on_gpu(rule_name, planned_gpus):
    """Whether a job of `rule_name` will use a GPU (semtail/job_resources.py, runs_on_gpu):
    by its `gpu` resource after --set-resources, and this run's `gpu` limit or a cluster.
    """
    gpus = set_resource(rule_name, "gpu")
    limit = workflow.global_resources.get("gpu")
    limit = getattr(limit, "value", limit)
    return job_resources.runs_on_gpu(
        int(planned_gpus if gpus is None else gpus),
        cluster=not workflow.local_exec or workflow.remote_exec,
        gpu_limit=None if limit is None else int(limit),
        visible_gpus=visible_gpu_count(),
    )


def benchmark_file(rule_name):
    """Snakemake's benchmark file of a rule's jobs (semtail/plan.py:BENCHMARKS)."""
    return plan.benchmark_pattern(config, rule_name)


def sizing_hyperparameters(hyperparameters, wildcards):
    """What `resource` sizes a training job by: `hyperparameters(wildcards)`, or the config's
    (None) while the search's selection it reads has not run. Snakemake plans such a job anew once
    the selection ran, and sizes it then by the choice. (Snakemake would take a resource that waits
    for a checkpoint as 0, which it cannot use as threads.)"""
    if hyperparameters is None:
        return None
    try:
        return hyperparameters(wildcards)
    except IncompleteCheckpointException:
        return None


def cpus_per_gpu(wildcards, threads):
    """SLURM: a GPU job's CPUs are requested per GPU (--cpus-per-gpu), as many as its threads."""
    return threads


def weight_landscape_evaluations(wildcards):
    follow_selections(wildcards.dataset, config["methods"])
    return plan.weight_landscape_evaluations(config, wildcards.dataset)


def adversary_evaluations(wildcards):
    follow_selections(wildcards.dataset, config["methods"])
    return plan.adversary_evaluations(config, wildcards.dataset)
