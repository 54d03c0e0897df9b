"""Per-dataset tables: summary.{csv,md} (mean ± std over seeds) and paper_comparison.{csv,md}."""

from semtail import tables
from semtail.files import atomic_path, write_text
from semtail.script_io import script_run, setup_logging

run = script_run(globals(), "Aggregate a dataset's metric JSONs into summary and paper-comparison tables.")
log = setup_logging(run, "aggregate")

dataset = run.params.dataset
runs = tables.load_runs(run.input.metrics, dataset)
summary = tables.summarise(runs)
reported = tables.load_reported(run.input.get("paper_results"))  # by default the package's own
comparison, notes = tables.paper_comparison(summary, dataset, reported)

with atomic_path(run.output.summary_csv) as tmp:
    summary.to_csv(tmp, index=False)
write_text(run.output.summary_md, tables.summary_markdown(summary, dataset))
with atomic_path(run.output.comparison_csv) as tmp:
    comparison.to_csv(tmp, index=False)
write_text(run.output.comparison_md, tables.comparison_markdown(comparison, dataset, reported, notes))
log.info("%s: %d runs of %d methods; %d comparison rows", dataset, len(runs), len(summary), len(comparison))
