# POSIT reproduction workflow: download -> preprocess -> train -> evaluate -> aggregate/plot.
# Run `snakemake --cores all` for the ML-100K demo (config.yaml), or
# `snakemake --configfile configs/paper.yaml ...` for the paper's datasets.

# Also usable as a module of another workflow (docs/running.md, "As a module"): every file of the
# workflow's own is found from the folder of the file that names it, never from the working directory.

from snakemake.utils import min_version

min_version("9.0")


# A --configfile on the command line replaces config.yaml instead of being merged into it,
# so that the paper run does not also carry the demo dataset.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Checks the config (schemas/config.schema.yaml, then across keys) and binds the planning helpers.
include: "rules/common.smk"


report: "report/workflow.rst"


include: "rules/download.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/tuning.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/resources.smk"
include: "rules/unconfigured.smk"


rule all:
    default_target: True
    input:
        final_targets(),
    message:
        job_line("all: the workflow's targets")
