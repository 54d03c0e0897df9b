# POSIT reproduction workflow: download -> preprocess -> train -> evaluate -> aggregate/plot.
# Run `snakemake --cores all` for the ML-100K demo (config.yaml), or
# `snakemake --configfile configs/paper.yaml ...` for the paper's datasets.

from snakemake.utils import min_version, validate

min_version("9.0")


# A --configfile on the command line replaces config.yaml instead of being merged into it,
# so that the paper run does not also carry the demo dataset.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/tuning.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
