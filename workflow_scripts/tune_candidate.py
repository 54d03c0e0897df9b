"""Train one candidate of a hyperparameter search and score it on the validation users:
results/{dataset}/{method}/tuning/{candidate}/validation.json (no model file).

Snakemake runs it from rules/tuning.smk. By hand, for example:

    python workflow_scripts/tune_candidate.py --input train=data/processed/ml-100k/train.npz \\
        --input validation_tr=data/processed/ml-100k/validation_tr.npz \\
        --input validation_te=data/processed/ml-100k/validation_te.npz \\
        --output validation=/tmp/validation.json --params candidate.yaml --log /tmp/candidate.log

where candidate.yaml holds dataset, method, variant, candidate, settings, seed, hyperparameters,
evaluation and device, as the rule's params.
"""

import os

# Sleeping OpenMP threads, as in train.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from semtail.device import describe, select_device  # noqa: E402
from semtail.files import write_json  # noqa: E402
from semtail.provenance import CANDIDATE_SCRIPT, code_version, environment  # noqa: E402
from semtail.script_io import plain, script_run, setup_logging  # noqa: E402
from semtail.validation import train_and_validate  # noqa: E402

run = script_run(globals(), "Train one candidate of a hyperparameter search and score it on the validation users.")
log = setup_logging(run, "tune_candidate")
torch.set_num_threads(max(1, int(run.threads)))
params = run.params
method = str(params.method)
device = select_device(str(params.get("device", "auto")), int(run.resources.get("gpu", 1)))
inputs = {name: str(run.input[name]) for name in run.input.keys()}
inputs.pop("stats", None)
checkpoint = params.get("checkpoint")
record, training = train_and_validate(
    dataset=str(params.dataset),
    name=str(params.get("variant") or method),
    method=method,
    candidate=str(params.candidate),
    settings=plain(params.settings),
    seed=int(params.seed),
    hyperparameters=plain(params.hyperparameters),
    inputs=inputs,
    evaluation=plain(params.evaluation),
    device=device,
    environment={**environment(), "device": describe(device)},
    code_version=str(params.get("code_version") or code_version(method, CANDIDATE_SCRIPT)),
    checkpoint=None if checkpoint is None else str(checkpoint),
    log=log,
)
write_json(run.output.validation, record)
training.remove_checkpoint()
log.info(
    "%s %s candidate %s %s: validation ndcg@100 %.4f",
    record["dataset"], record["method"], record["candidate"], record["settings"], record["metrics"]["ndcg@100"],
)  # fmt: skip
