localrules:
    download,


rule download:
    output:
        provenance="data/raw/{dataset}/provenance.json",
    params:
        sources=dataset_sources,
    log:
        "logs/download/{dataset}.log",
    retries: 2
    threads: 1
    resources:
        mem_mb=1024,
        runtime=240,
    script:
        "../workflow_scripts/download.py"
