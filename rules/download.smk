localrules:
    download,


rule download:
    output:
        provenance="data/raw/{dataset}/provenance.json",
    params:
        dataset="{dataset}",
        sources=dataset_sources,
    log:
        "logs/download/{dataset}.log",
    retries: 2
    threads: resource("threads", "download")
    resources:
        mem_mb=resource("mem_mb", "download"),
        runtime=resource("runtime", "download"),
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/download.py"
