rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/{dataset}/{method}/seed{seed}/model.pt",
    params:
        dataset="{dataset}",
        method="{method}",
        seed="{seed}",
        hyperparameters=method_hyperparameters,
        device=compute_device,
        code_version=method_code_version,
        checkpoint="results/{dataset}/{method}/seed{seed}/checkpoint.pt",
    log:
        "logs/train/{dataset}/{method}/seed{seed}.log",
    threads: 2
    resources:
        gpu=gpus_per_job,
        mem_mb=resource("mem_mb", "train"),
        runtime=resource("runtime", "train"),
    script:
        "../workflow_scripts/train.py"
