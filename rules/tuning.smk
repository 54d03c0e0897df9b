# The hyperparameter search (config `tuning:`, semtail/search.py and semtail/selection.py): one job
# per candidate of a searched method and search seed, trained on the training users and scored on
# the validation users, then a selection per (dataset, method) by the mean over the seeds. The selection is a checkpoint: train jobs of a
# searched method read their hyperparameters from selected.yaml once it exists (rules/common.smk:
# method_hyperparameters).


rule tune_candidate:
    input:
        unpack(candidate_inputs),
    output:
        validation=results("{dataset}/{method}/tuning/{candidate}/validation.json"),
    log:
        logs("tune_candidate/{dataset}/{method}/{candidate}.log"),
    benchmark:
        benchmark_file("tune_candidate")
    conda:
        "../envs/torch.yaml"
    threads: resource("threads", "train", candidate_hyperparameters, rule_name="tune_candidate")
    resources:
        gpu=from_config(job_resources.training_gpus, "method"),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=resource(
            "mem_mb", "train", candidate_hyperparameters, rule_name="tune_candidate"
        ),
        runtime=resource(
            "runtime", "train", candidate_hyperparameters, rule_name="tune_candidate"
        ),
    params:
        dataset="{dataset}",
        method=from_config(plan.method_of, "method"),
        variant="{method}",
        candidate="{candidate}",
        settings=candidate_settings,
        seed=candidate_seed,
        hyperparameters=candidate_hyperparameters,
        evaluation=config["evaluation"],
        device=config["compute"]["device"],
        code_version=from_config(
            plan.method_code_version, "method", script=provenance.CANDIDATE_SCRIPT
        ),
        checkpoint=candidate_checkpoint,
    message:
        job_line(
            "tune_candidate {wildcards.dataset} {wildcards.method} {wildcards.candidate} seed {params.seed}: {params.settings}"
        )
    script:
        "../workflow_scripts/tune_candidate.py"


# A further search seed's run of a candidate (`tuning.seeds`): the first seed's keeps the path
# above, so adding seeds to a search runs only the new ones.
use rule tune_candidate as tune_candidate_seed with:
    output:
        validation=results(
            "{dataset}/{method}/tuning/{candidate}/seed{seed}/validation.json"
        ),
    log:
        logs("tune_candidate/{dataset}/{method}/{candidate}.seed{seed}.log"),
    benchmark:
        benchmark_file("tune_candidate_seed")


checkpoint select_hyperparameters:
    input:
        candidates=from_config(search.candidate_files, "dataset", "method"),
    output:
        selected=results("{dataset}/{method}/selected.yaml"),
    log:
        logs("select_hyperparameters/{dataset}/{method}.log"),
    benchmark:
        benchmark_file("select_hyperparameters")
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        dataset="{dataset}",
        method="{method}",
        trains=from_config(plan.method_of, "method"),
        metric=selection_metric,
        within=selection_guards,
        seeds=search.search_seeds(config),
        code_version=stage_code_version("select_hyperparameters"),
    message:
        job_line("select_hyperparameters {wildcards.dataset} {wildcards.method}")
    script:
        "../workflow_scripts/select_hyperparameters.py"


rule tuning_table:
    input:
        selected=from_config(search.selected_files, "dataset"),
    output:
        table_csv=report(
            results("{dataset}/tuning.csv"),
            caption="../report/tuning.rst",
            category="Hyperparameter search",
            subcategory="{dataset}",
        ),
        table_md=results("{dataset}/tuning.md"),
    log:
        logs("tuning_table/{dataset}.log"),
    benchmark:
        benchmark_file("tuning_table")
    localrule: True
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        dataset="{dataset}",
        code_version=stage_code_version("tuning_table"),
    message:
        job_line("tuning_table {wildcards.dataset}")
    script:
        "../workflow_scripts/tuning_table.py"
