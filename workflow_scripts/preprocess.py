"""Preprocess stage: the Liang et al. (2018) split of a downloaded dataset into
data/processed/{dataset}/{p}/ (train, validation_tr/te, test_tr/te matrices, id lists, stats.json).

Standalone:  python workflow_scripts/preprocess.py --input provenance=data/raw/ml-100k/provenance.json \
                 --output train=OUT/train.npz --output validation_tr=OUT/validation_tr.npz ... \
                 --output stats=OUT/stats.json --params params.yaml [--log preprocess.log]
where params.yaml holds `dataset`, `preprocess` (threshold, min_uc, min_sc, n_heldout, seed, test_prop)
and optionally `expected` (published users, items, interactions and interactions_relative_tolerance)
and `code_version`.
"""

import sys
from pathlib import Path

from semtail.datasets import DataError
from semtail.datasets.preprocess import OUTPUT_NAMES, preprocess
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(globals(), "Split a downloaded dataset as Liang et al. (2018) do, into data/processed/{dataset}/{p}/.")
log = setup_logging(run, "preprocess")
outputs = {name: run.output.get(name) for name in OUTPUT_NAMES if run.output.get(name)}
try:
    preprocess(
        provenance_file=run.input.provenance,
        outputs=outputs,
        dataset=run.params.get("dataset") or Path(outputs.get("stats", "unnamed")).parent.name,
        parameters=plain(run.params.preprocess),
        expected=plain(run.params.get("expected") or {}),
        code_version=run.params.get("code_version"),
    )
except DataError as error:
    log.error("%s", error)
    sys.exit(1)
exit_without_teardown()
