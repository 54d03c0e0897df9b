rule evaluate:
    input:
        unpack(base_model_of_run),
        unpack(from_config(plan.evaluation_inputs, "dataset")),
        model=results("{dataset}/{method}/{run}/model.pt"),
    output:
        metrics=results("{dataset}/{method}/{run}/metrics.json"),
        topk=results("{dataset}/{method}/{run}/topk.npz"),
        item_stats=results("{dataset}/{method}/{run}/items.npz"),
        per_user=results("{dataset}/{method}/{run}/per_user.csv"),
    log:
        logs("evaluate/{dataset}/{method}/{run}.log"),
    benchmark:
        benchmark_file("evaluate")
    # Before more training: under `model_files: temporary` this frees each model file soonest.
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: resource("threads", "evaluate")
    resources:
        gpu=job_resources.gpus_per_job(config),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=resource("mem_mb", "evaluate"),
        runtime=resource("runtime", "evaluate"),
    params:
        evaluation=config["evaluation"],
        seed=run_seed,
        device=config["compute"]["device"],
        code_version=stage_code_version("evaluate"),
        # What the model must have been trained with: the train job's, so that a retrain that
        # failed or was killed (its model file removed) is redone on the next run.
        hyperparameters=method_hyperparameters,
        model_code_version=from_config(plan.method_code_version, "method"),
    message:
        job_line("evaluate {wildcards.dataset} {wildcards.method} {wildcards.run}")
    script:
        "../workflow_scripts/evaluate.py"
