"""A dataset's figures: coverage@k, item recall by popularity, accuracy against coverage, Lorenz curves."""

from semtail import figures, run_metrics
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(globals(), "Plot a dataset's evaluation results as PNG and PDF figures.")
log = setup_logging(run, "plot")

dataset = run.params.dataset
run_metrics.check_runs_current(run.input.metrics, plain(run.params.get("runs")), run.input)
runs = figures.load_runs(run.input.metrics, run.input.topk, run.input.item_stats)
output = run.output
figures.save(figures.coverage_at_k_figure(runs, dataset), output.coverage_at_k, output.coverage_at_k_pdf)
figures.save(
    figures.item_recall_by_popularity_figure(runs, dataset),
    output.item_recall_by_popularity,
    output.item_recall_by_popularity_pdf,
)
figures.save(
    figures.tradeoff_figure(runs, dataset), output.accuracy_coverage_tradeoff, output.accuracy_coverage_tradeoff_pdf
)
figures.save(figures.lorenz_figure(runs, dataset), output.lorenz, output.lorenz_pdf)
log.info("%s: plotted %d runs", dataset, len(runs))
exit_without_teardown()
