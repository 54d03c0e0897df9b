# A target of a dataset that the config does not have matches this rule only, whose input function
# then stops the planning with a message saying so (rather than Snakemake's "No rule to produce").
rule unconfigured_dataset:
    input:
        refuse_unconfigured_dataset,
    output:
        "{folder}/{unconfigured}/{path}",
    log:
        logs("unconfigured_dataset/{folder}/{unconfigured}/{path}.log"),
    wildcard_constraints:
        folder="|".join(map(re.escape, (RESULTS, "data/raw", "data/processed"))),
        unconfigured=plan.unconfigured_dataset_pattern(DATASETS),
        path=".+",
    localrule: True
    conda:
        "../envs/data.yaml"
    shell:
        "exit 1"
