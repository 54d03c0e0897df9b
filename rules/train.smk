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
        gpu=training_gpus,
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=resource("mem_mb", "train", method_hyperparameters),
        runtime=resource("runtime", "train", method_hyperparameters),
    params:
        dataset="{dataset}",
        method=method_of,
        variant="{method}",
        seed=run_seed,
        hyperparameters=method_hyperparameters,
        device=compute_device,
        code_version=method_code_version,
        checkpoint=results("{dataset}/{method}/{run}/checkpoint.pt"),
    message:
        job_line("train {wildcards.dataset} {wildcards.method} {wildcards.run}")
    script:
        "../workflow_scripts/train.py"
