# The experiment's jobs measured against their declarations (semtail/resource_check.py): every rule
# writes Snakemake's benchmark file under logs/.../benchmarks/, in the extended format that records
# the job's declared resources (turned on in rules/common.smk).


rule resources_table:
    input:
        benchmarks=from_config(plan.benchmark_files),
    output:
        table=results("resources.csv"),
    log:
        logs("resources_table.log"),
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        code_version=stage_code_version("resources_table"),
    message:
        job_line(
            "resources_table: each job's peak memory and wall time against its declaration"
        )
    script:
        "../workflow_scripts/resources_table.py"
