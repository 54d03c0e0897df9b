rule preprocess:
    input:
        provenance="data/raw/{dataset}/provenance.json",
    output:
        train="data/processed/{dataset}/train.npz",
        validation_tr="data/processed/{dataset}/validation_tr.npz",
        validation_te="data/processed/{dataset}/validation_te.npz",
        test_tr="data/processed/{dataset}/test_tr.npz",
        test_te="data/processed/{dataset}/test_te.npz",
        item_ids="data/processed/{dataset}/items.txt",
        train_users="data/processed/{dataset}/train_users.txt",
        validation_users="data/processed/{dataset}/validation_users.txt",
        test_users="data/processed/{dataset}/test_users.txt",
        stats="data/processed/{dataset}/stats.json",
    log:
        "logs/preprocess/{dataset}.log",
    conda:
        "../envs/data.yaml"
    threads: resource("threads", "preprocess")
    resources:
        mem_mb=resource("mem_mb", "preprocess"),
        runtime=resource("runtime", "preprocess"),
    params:
        dataset="{dataset}",
        preprocess=preprocess_parameters,
        expected=expected_sizes,
        code_version=stage_code_version("preprocess"),
    message:
        job_line("preprocess {wildcards.dataset}")
    script:
        "../workflow_scripts/preprocess.py"
