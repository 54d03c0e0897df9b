"""Train one method on one dataset's split with one seed, and write its model file.

Snakemake runs it from rules/train.smk. By hand, for example:

    python workflow_scripts/train.py --input train=data/processed/ml-100k/train.npz \\
        --input validation_tr=data/processed/ml-100k/validation_tr.npz \\
        --input validation_te=data/processed/ml-100k/validation_te.npz \\
        --output model=/tmp/model.pt --param dataset=ml-100k --param method=ease --param seed=0 \\
        --params hyperparameters.yaml --param device=cpu --log /tmp/train.log

where hyperparameters.yaml holds `hyperparameters: {lr: ..., ...}`. The checkpoint cadence comes
from the workflow config's `checkpoints` block (by hand: `--configfile config.yaml`), not from the
params: it does not change the model, so changing it reruns nothing.
"""

import os
import sys

# OpenMP threads that wait by sleeping, not spinning: when a machine runs more threads than it has
# cores (several jobs, other users), spinning threads slow small matrix work down many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP setting, which is read when torch loads it)

from semtail.device import describe, select_device  # noqa: E402
from semtail.train_job import train_and_save  # noqa: E402
from semtail.provenance import code_version, environment  # noqa: E402
from semtail.script_io import plain, script_run, setup_logging  # noqa: E402

run = script_run(globals(), "Train one method on one dataset's split with one seed, and write its model file.")
log = setup_logging(run, "train")
torch.set_num_threads(max(1, int(run.threads)))  # Snakemake's threads; more only contend on small data
params = run.params
method = str(params.method)
device = select_device(str(params.get("device", "auto")), int(run.resources.get("gpu", 1)))
inputs = {name: str(run.input[name]) for name in run.input.keys()}
inputs.pop("stats", None)  # read by the planner for resources; the matrices carry the sizes
checkpoint = params.get("checkpoint")
train_and_save(
    dataset=str(params.dataset),
    method=method,
    seed=int(params.seed),
    hyperparameters=plain(params.hyperparameters),
    inputs=inputs,
    output=run.output.model,
    device=device,
    environment={**environment(), "device": describe(device)},
    code_version=str(params.get("code_version") or code_version(method)),
    variant=str(params.get("variant") or method),
    checkpoint=None if checkpoint is None else str(checkpoint),
    log=log,
    progress=sys.stderr.isatty(),
    checkpoint_cadence=plain(run.config.get("checkpoints") or {}),
)
