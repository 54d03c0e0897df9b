"""POSIT's adversary beside accuracy and coverage: adversary.{csv,md} and figures/adversary.{png,pdf}."""

from semtail import figures, run_metrics, tables
from semtail.files import atomic_path, write_text
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(globals(), "Tabulate and plot what POSIT's adversary did, beside every method's NDCG and coverage.")
log = setup_logging(run, "plot_adversary")

dataset = run.params.dataset
run_metrics.check_runs_current(run.input.metrics, plain(run.params.get("runs")), run.input)
summary = tables.summarise(tables.load_runs(run.input.metrics, dataset))
posit_runs = [run_metrics.read_metrics_json(path) for path in figures.as_path_list(run.input.posit_metrics)]
history = tables.adversary_history(posit_runs)
table = tables.adversary_table(summary, history)
with atomic_path(run.output.table_csv) as tmp:
    table.to_csv(tmp, index=False)
write_text(run.output.table_md, tables.adversary_markdown(table, dataset))
figures.save(figures.adversary_figure(table, history, dataset), run.output.figure, run.output.figure_pdf)
log.info("%s: adversary table and figure of %d POSIT runs among %d methods", dataset, len(posit_runs), len(table))
exit_without_teardown()
