"""Per-dataset tables: summary.{csv,md,tex} (mean ± std over seeds, significant differences from the
reference marked), paper_comparison.{csv,md,tex} and significance.csv (paired tests over the test
users against the reference method, semtail/significance.py)."""

from semtail import selection, significance, tables
from semtail.files import atomic_path, write_text
from semtail.script_io import plain, script_run, setup_logging

run = script_run(globals(), "Aggregate a dataset's metric JSONs into summary, paper-comparison and significance tables.")
log = setup_logging(run, "aggregate")

dataset = run.params.dataset
runs = tables.load_runs(run.input.metrics, dataset)
summary = tables.summarise(runs)
reported = tables.load_reported(run.input.get("paper_results"))  # by default the package's own
comparison, notes = tables.paper_comparison(summary, dataset, reported)
compare = plain(run.params.compare)
means, n_seeds = significance.user_means(runs, run.input.metrics, run.input.per_user)
tests = significance.compare(
    means,
    n_seeds,
    dataset=dataset,
    reference=compare["reference"],
    samples=compare["bootstrap_samples"],
    seed=compare["bootstrap_seed"],
    alpha=compare["alpha"],
)

with atomic_path(run.output.summary_csv) as tmp:
    summary.to_csv(tmp, index=False)
grid_edges = selection.grid_edge_markdown(plain(run.params.get("grid_edge_warnings", [])))
write_text(run.output.summary_md, tables.summary_markdown(summary, dataset, tests) + grid_edges)
write_text(run.output.summary_tex, tables.summary_latex(summary, dataset, tests))
with atomic_path(run.output.comparison_csv) as tmp:
    comparison.to_csv(tmp, index=False)
write_text(run.output.comparison_md, tables.comparison_markdown(comparison, dataset, reported, notes))
write_text(run.output.comparison_tex, tables.comparison_latex(comparison, dataset))
with atomic_path(run.output.significance_csv) as tmp:
    tests.to_csv(tmp, index=False)
log.info(
    "%s: %d runs of %d methods; %d comparison rows; %d of %d differences from %s significant",
    dataset, len(runs), len(summary), len(comparison), int(tests["significant"].sum()), len(tests), compare["reference"],
)  # fmt: skip
