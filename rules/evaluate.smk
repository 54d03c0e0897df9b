rule evaluate:
    input:
        unpack(evaluation_inputs),
        model=results("{dataset}/{method}/{run}/model.pt"),
        train="data/processed/{dataset}/train.npz",
        test_tr="data/processed/{dataset}/test_tr.npz",
        test_te="data/processed/{dataset}/test_te.npz",
        test_users="data/processed/{dataset}/test_users.txt",
    output:
        metrics=results("{dataset}/{method}/{run}/metrics.json"),
        topk=results("{dataset}/{method}/{run}/topk.npz"),
        item_stats=results("{dataset}/{method}/{run}/items.npz"),
        per_user=results("{dataset}/{method}/{run}/per_user.csv"),
    log:
        logs("evaluate/{dataset}/{method}/{run}.log"),
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
        seed=run_seed,
        device=compute_device,
        code_version=stage_code_version("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"
