rule preprocess:
    input:
        provenance="data/raw/{dataset}/provenance.json",
    output:
        **plan.split_file_patterns(),
    log:
        "logs/preprocess/{dataset}/{split}.log",
    benchmark:
        benchmark_file("preprocess")
    conda:
        "../envs/data.yaml"
    threads: resource("threads", "preprocess")
    resources:
        mem_mb=resource("mem_mb", "preprocess"),
        runtime=resource("runtime", "preprocess"),
    params:
        dataset="{dataset}",
        preprocess=from_config(plan.split_settings, "dataset", "split"),
        expected=expected_sizes,
        code_version=stage_code_version("preprocess"),
    message:
        job_line("preprocess {wildcards.dataset}")
    script:
        "../workflow_scripts/preprocess.py"
