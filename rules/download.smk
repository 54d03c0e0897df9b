rule download:
    output:
        provenance="data/raw/{dataset}/provenance.json",
    log:
        "logs/download/{dataset}.log",
    benchmark:
        benchmark_file("download")
    # Transient network errors are retried inside the job; a checksum mismatch or a missing file
    # would only fail again, whatever --retries the profile sets.
    retries: 0
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: resource("threads", "download")
    resources:
        mem_mb=resource("mem_mb", "download"),
        runtime=resource("runtime", "download"),
    params:
        dataset="{dataset}",
        sources=dataset_sources,
    message:
        job_line("download {wildcards.dataset}")
    script:
        "../workflow_scripts/download.py"
