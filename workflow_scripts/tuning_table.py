"""A dataset's hyperparameter searches in one table: tuning.csv and tuning.md, from the
selected.yaml of each searched method."""

from semtail.files import atomic_path, write_text
from semtail.script_io import exit_without_teardown, script_run, setup_logging
from semtail.selection import read_selected, tuning_markdown, tuning_table

run = script_run(globals(), "Tabulate a dataset's hyperparameter searches (every candidate and the choice).")
log = setup_logging(run, "tuning_table")
paths = run.input.selected
documents = [read_selected(path, dataset=run.params.dataset) for path in ([paths] if isinstance(paths, str) else paths)]
table = tuning_table(documents)
with atomic_path(run.output.table_csv) as tmp:
    table.to_csv(tmp, index=False)
write_text(run.output.table_md, tuning_markdown(documents, run.params.dataset))
log.info("%s: %d searched methods, %d candidates", run.params.dataset, len(documents), len(table))
exit_without_teardown()
