localrules:
    download,


rule download:
    output:
        provenance="data/raw/{dataset}/provenance.json",
    log:
        "logs/download/{dataset}.log",
    retries: 2
    conda:
        "../envs/data.yaml"
    threads: resource("threads", "download")
    resources:
        mem_mb=resource("mem_mb", "download"),
        runtime=resource("runtime", "download"),
    params:
        dataset="{dataset}",
        sources=dataset_sources,
    script:
        "../workflow_scripts/download.py"
