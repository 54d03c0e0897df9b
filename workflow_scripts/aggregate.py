"""Per-dataset tables: summary.{csv,md,tex} (mean ± std over seeds, significant differences from the
reference marked, flags of semtail/flags.py), paper_comparison.{csv,md,tex} and significance.csv
(paired tests over the test users and seeds against the reference method, semtail/significance.py)."""

from semtail import flags, run_metrics, selection, significance, tables
from semtail.files import atomic_path, write_text
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(
    globals(), "Aggregate a dataset's metric JSONs into summary, paper-comparison and significance tables."
)
log = setup_logging(run, "aggregate")

dataset = run.params.dataset
run_metrics.check_runs_current(run.input.metrics, plain(run.params.get("runs")), run.input)
runs = tables.load_runs(run.input.metrics, dataset)
summary = tables.summarise(runs)
reported = tables.load_reported(run.input.get("paper_results"))  # by default the package's own
comparison, notes = tables.paper_comparison(summary, dataset, reported)
compare = plain(run.params.compare)
values = significance.user_values(runs, run.input.metrics, run.input.per_user)
tests = significance.compare(
    values,
    dataset=dataset,
    reference=compare["reference"],
    samples=compare["bootstrap_samples"],
    seed=compare["bootstrap_seed"],
    alpha=compare["alpha"],
)
unchanged = flags.unchanged_on_base(run.input.metrics, run.input.topk)
disagreements = flags.seed_disagreements(runs, compare["reference"], unchanged)

with atomic_path(run.output.summary_csv) as tmp:
    summary.to_csv(tmp, index=False)
grid_edges = selection.grid_edge_markdown(plain(run.params.get("grid_edge_warnings", [])))
write_text(
    run.output.summary_md, tables.summary_markdown(summary, dataset, tests, disagreements, unchanged) + grid_edges
)
write_text(run.output.summary_tex, tables.summary_latex(summary, dataset, tests, disagreements))
with atomic_path(run.output.comparison_csv) as tmp:
    comparison.to_csv(tmp, index=False)
write_text(run.output.comparison_md, tables.comparison_markdown(comparison, dataset, reported, notes))
write_text(run.output.comparison_tex, tables.comparison_latex(comparison, dataset))
with atomic_path(run.output.significance_csv) as tmp:
    tests.to_csv(tmp, index=False)
log.info(
    "%s: %d runs of %d methods; %d comparison rows; %d of %d differences from %s significant; "
    "%d (method, metric) pairs whose seeds disagree; on-base methods that changed nothing: %s",
    dataset,
    len(runs),
    len(summary),
    len(comparison),
    int(tests["significant"].sum()),
    len(tests),
    compare["reference"],
    len(disagreements),
    ", ".join(unchanged["method"]) or "none",
)
exit_without_teardown()
