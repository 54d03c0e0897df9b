rule evaluate:
    input:
        unpack(selections_of_run),
        model=results("{dataset}/{method}/seed{seed}/model.pt"),
        train="data/processed/{dataset}/train.npz",
        test_tr="data/processed/{dataset}/test_tr.npz",
        test_te="data/processed/{dataset}/test_te.npz",
        test_users="data/processed/{dataset}/test_users.txt",
    output:
        metrics=results("{dataset}/{method}/seed{seed}/metrics.json"),
        topk=results("{dataset}/{method}/seed{seed}/topk.npz"),
        item_stats=results("{dataset}/{method}/seed{seed}/items.npz"),
        per_user=results("{dataset}/{method}/seed{seed}/per_user.csv"),
    log:
        logs("evaluate/{dataset}/{method}/seed{seed}.log"),
    conda:
        "../envs/torch.yaml"
    threads: resource("threads", "evaluate")
    resources:
        gpu=gpus_per_job,
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=resource("mem_mb", "evaluate"),
        runtime=resource("runtime", "evaluate"),
    params:
        evaluation=config["evaluation"],
        device=compute_device,
        code_version=stage_code_version("evaluate"),
    message:
        job_line(
            "evaluate {wildcards.dataset} {wildcards.method} seed {wildcards.seed}"
        )
    script:
        "../workflow_scripts/evaluate.py"
