"""An experiment's resources.csv: every job's measured peak memory and wall time (its benchmark
file) beside what it declared; fails, naming the jobs, when one used more than it declared."""

import sys

from semtail.files import atomic_path
from semtail.resource_check import ResourceRecordError, ResourcesExceeded, check_within, resource_rows, write_table
from semtail.script_io import exit_without_teardown, script_run, setup_logging

run = script_run(globals(), "Tabulate every job's measured peak memory and wall time against its declaration.")
log = setup_logging(run, "resources_table")
try:
    rows = resource_rows(list(run.input.benchmarks))
    for row in rows:
        log.info("%s", ", ".join(row.as_csv()[1:]))
    for row in rows:
        if row.within and row.note:
            log.warning("%s: %s", row.job, row.note)
    check_within(rows)
except (ResourceRecordError, ResourcesExceeded) as error:
    log.error("%s", error)
    sys.exit(1)
with atomic_path(run.output.table) as tmp:
    write_table(rows, tmp)
log.info("%d jobs, every one within what it declared", len(rows))
exit_without_teardown()
