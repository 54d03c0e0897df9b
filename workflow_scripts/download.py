"""Download stage: fetch a dataset's raw files from the first configured source that passes
verification, and write data/raw/{dataset}/provenance.json (last) saying what was fetched.

Standalone:  python workflow_scripts/download.py --output provenance=data/raw/ml-100k/provenance.json \
                 --params sources.yaml [--param dataset=ml-100k] [--log download.log]
where sources.yaml holds `sources: [...]` as under `datasets.<name>` in the config.
Extra `pip download` options for pypi sources can be given in $SEMTAIL_PIP_OPTIONS.
"""

import sys
from pathlib import Path

from semtail.datasets import DataError
from semtail.datasets.sources import fetch_dataset
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(globals(), "Fetch a dataset's raw files from the first configured source that passes verification.")
log = setup_logging(run, "download")
provenance_file = Path(run.output.provenance)
dataset = run.params.get("dataset") or provenance_file.parent.name
try:
    fetch_dataset(dataset, plain(run.params.sources), provenance_file)
except DataError as error:
    log.error("%s", error)
    sys.exit(1)
exit_without_teardown()
