"""Train one candidate of a hyperparameter search and score it on the validation users:
results/{dataset}/{method}/tuning/{candidate}/validation.json (no model file).

Snakemake runs it from rules/tuning.smk. By hand, for example:

    python workflow_scripts/tune_candidate.py --input train=data/processed/ml-100k/<p>/train.npz \\
        --input validation_tr=data/processed/ml-100k/<p>/validation_tr.npz \\
        --input validation_te=data/processed/ml-100k/<p>/validation_te.npz \\
        --output validation=/tmp/validation.json --params candidate.yaml --log /tmp/candidate.log

where <p> is the split's folder (as for train.py) and candidate.yaml holds dataset, method, variant,
candidate, settings, seed, hyperparameters, evaluation and device, as the rule's params. The checkpoint cadence comes from the workflow config's
`checkpoints` block (by hand: `--configfile config.yaml`), as in train.py.
"""

import os

# Sleeping OpenMP threads, as in train.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from semtail.candidate import train_and_validate  # noqa: E402
from semtail.files import write_json  # noqa: E402
from semtail.provenance import CANDIDATE_SCRIPT  # noqa: E402
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging  # noqa: E402
from semtail.train_job import ending_on_signal, job_arguments  # noqa: E402

run = script_run(globals(), "Train one candidate of a hyperparameter search and score it on the validation users.")
log = setup_logging(run, "tune_candidate")
params = run.params
# The log's name is the candidate's hash: its first line says what the candidate is.
log.info(
    "%s %s candidate %s, seed %s: %s",
    params.dataset,
    params.get("variant") or params.method,
    params.candidate,
    params.seed,
    plain(params.settings),
)
with ending_on_signal(log):
    record, training = train_and_validate(
        candidate=str(params.candidate),
        settings=plain(params.settings),
        evaluation=plain(params.evaluation),
        log=log,
        **job_arguments(run, CANDIDATE_SCRIPT),
    )
write_json(run.output.validation, record)
training.remove_checkpoint()
log.info(
    "%s %s candidate %s %s: validation ndcg@100 %.4f",
    record["dataset"],
    record["method"],
    record["candidate"],
    record["settings"],
    record["metrics"]["ndcg@100"],
)
exit_without_teardown()
