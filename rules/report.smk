rule aggregate:
    input:
        unpack(run_inputs),
    output:
        summary_csv=report(
            results("{dataset}/summary.csv"),
            caption="../report/summary.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        summary_md=results("{dataset}/summary.md"),
        summary_tex=results("{dataset}/summary.tex"),
        comparison_csv=report(
            results("{dataset}/paper_comparison.csv"),
            caption="../report/paper_comparison.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        comparison_md=results("{dataset}/paper_comparison.md"),
        comparison_tex=results("{dataset}/paper_comparison.tex"),
        significance_csv=report(
            results("{dataset}/significance.csv"),
            caption="../report/significance.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    log:
        logs("aggregate/{dataset}.log"),
    benchmark:
        benchmark_file("aggregate")
    localrule: True
    conda:
        "../envs/plot.yaml"
    threads: resource("threads", "report")
    resources:
        mem_mb=resource("mem_mb", "report"),
        runtime=resource("runtime", "report"),
    params:
        dataset="{dataset}",
        runs=current_runs,
        compare=plan.compare_settings(config),
        grid_edge_warnings=grid_edge_warnings,
        code_version=stage_code_version("aggregate"),
        # Read from the semtail package; its digest reruns the tables when the reported numbers change.
        paper_results=resource_version("paper_results.yaml"),
    message:
        job_line("aggregate {wildcards.dataset}")
    script:
        "../workflow_scripts/aggregate.py"


rule plot:
    input:
        unpack(run_inputs),
    output:
        coverage_at_k=report(
            results("{dataset}/figures/coverage_at_k.png"),
            caption="../report/coverage_at_k.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        coverage_at_k_pdf=results("{dataset}/figures/coverage_at_k.pdf"),
        item_recall_by_popularity=report(
            results("{dataset}/figures/item_recall_by_popularity.png"),
            caption="../report/item_recall_by_popularity.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        item_recall_by_popularity_pdf=results(
            "{dataset}/figures/item_recall_by_popularity.pdf"
        ),
        accuracy_coverage_tradeoff=report(
            results("{dataset}/figures/accuracy_coverage_tradeoff.png"),
            caption="../report/accuracy_coverage_tradeoff.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        accuracy_coverage_tradeoff_pdf=results(
            "{dataset}/figures/accuracy_coverage_tradeoff.pdf"
        ),
        lorenz=report(
            results("{dataset}/figures/lorenz.png"),
            caption="../report/lorenz.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        lorenz_pdf=results("{dataset}/figures/lorenz.pdf"),
    log:
        logs("plot/{dataset}.log"),
    benchmark:
        benchmark_file("plot")
    localrule: True
    conda:
        "../envs/plot.yaml"
    threads: resource("threads", "report")
    resources:
        mem_mb=resource("mem_mb", "report"),
        runtime=resource("runtime", "report"),
    params:
        dataset="{dataset}",
        runs=current_runs,
        code_version=stage_code_version("plot"),
        figure_styles=plan.figure_styles(config),
    message:
        job_line("plot {wildcards.dataset}")
    script:
        "../workflow_scripts/plot.py"


rule plot_weight_landscape:
    input:
        unpack(from_config(plan.split_files, "dataset", names=("train",))),
        item_stats=weight_landscape_evaluations,
    output:
        weight_landscape=report(
            results("{dataset}/figures/weight_landscape.png"),
            caption="../report/weight_landscape.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        weight_landscape_pdf=results("{dataset}/figures/weight_landscape.pdf"),
    log:
        logs("plot_weight_landscape/{dataset}.log"),
    benchmark:
        benchmark_file("plot_weight_landscape")
    conda:
        "../envs/plot.yaml"
    threads: resource("threads", "weight_landscape")
    resources:
        mem_mb=resource("mem_mb", "weight_landscape"),
        runtime=resource("runtime", "weight_landscape"),
    params:
        dataset="{dataset}",
        code_version=stage_code_version("plot_weight_landscape"),
    message:
        job_line("plot_weight_landscape {wildcards.dataset}")
    script:
        "../workflow_scripts/plot_weight_landscape.py"


rule plot_adversary:
    input:
        metrics=lambda wildcards: run_inputs(wildcards)["metrics"],
        posit_metrics=adversary_evaluations,
    output:
        table_csv=report(
            results("{dataset}/adversary.csv"),
            caption="../report/adversary_table.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
        table_md=results("{dataset}/adversary.md"),
        figure=report(
            results("{dataset}/figures/adversary.png"),
            caption="../report/adversary.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        figure_pdf=results("{dataset}/figures/adversary.pdf"),
    log:
        logs("plot_adversary/{dataset}.log"),
    benchmark:
        benchmark_file("plot_adversary")
    localrule: True
    conda:
        "../envs/plot.yaml"
    threads: resource("threads", "adversary")
    resources:
        mem_mb=resource("mem_mb", "adversary"),
        runtime=resource("runtime", "adversary"),
    params:
        dataset="{dataset}",
        runs=current_runs,
        code_version=stage_code_version("plot_adversary"),
        figure_styles=plan.figure_styles(config),
    message:
        job_line("plot_adversary {wildcards.dataset}")
    script:
        "../workflow_scripts/plot_adversary.py"
