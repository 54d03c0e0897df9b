"""Train one method on one dataset's split with one seed, and write its model file.

Snakemake runs it from rules/train.smk. By hand, for example:

    python workflow_scripts/train.py --input train=data/processed/ml-100k/<p>/train.npz \\
        --input validation_tr=data/processed/ml-100k/<p>/validation_tr.npz \\
        --input validation_te=data/processed/ml-100k/<p>/validation_te.npz \\
        --output model=/tmp/model.pt --param dataset=ml-100k --param method=ease --param seed=0 \\
        --params hyperparameters.yaml --param device=cpu --log /tmp/train.log

where <p> is the split's folder (the preprocess job of `snakemake --dry-run` names it) and
hyperparameters.yaml holds `hyperparameters: {lr: ..., ...}`. The checkpoint cadence comes
from the workflow config's `checkpoints` block (by hand: `--configfile config.yaml`), not from the
params: it does not change the model, so changing it reruns nothing.
"""

import os
import sys

# OpenMP threads that wait by sleeping, not spinning: when a machine runs more threads than it has
# cores (several jobs, other users), spinning threads slow small matrix work down many times over.
# Set before the imports below load torch, which reads it then.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from semtail.script_io import exit_without_teardown, script_run, setup_logging  # noqa: E402
from semtail.train_job import ending_on_signal, job_arguments, train_and_save  # noqa: E402

run = script_run(globals(), "Train one method on one dataset's split with one seed, and write its model file.")
log = setup_logging(run, "train")
with ending_on_signal(log):
    train_and_save(output=run.output.model, log=log, progress=sys.stderr.isatty(), **job_arguments(run))
exit_without_teardown()
