rule train:
    input:
        unpack(train_inputs),
    output:
        model=model_file(results("{dataset}/{method}/{run}/model.pt")),
    log:
        logs("train/{dataset}/{method}/{run}.log"),
    benchmark:
        benchmark_file("train")
    conda:
        "../envs/torch.yaml"
    threads: resource("threads", "train", method_hyperparameters)
    resources:
        gpu=from_config(job_resources.training_gpus, "method"),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=resource("mem_mb", "train", method_hyperparameters),
        runtime=resource("runtime", "train", method_hyperparameters),
    params:
        dataset="{dataset}",
        method=from_config(plan.method_of, "method"),
        variant="{method}",
        seed=run_seed,
        hyperparameters=method_hyperparameters,
        device=config["compute"]["device"],
        code_version=from_config(plan.method_code_version, "method"),
        checkpoint=results("{dataset}/{method}/{run}/checkpoint.pt"),
    message:
        job_line("train {wildcards.dataset} {wildcards.method} {wildcards.run}")
    script:
        "../workflow_scripts/train.py"
