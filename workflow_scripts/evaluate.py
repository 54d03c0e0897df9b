"""Evaluate one trained model on the test users: metrics.json, topk.npz, items.npz and per_user.csv."""

import torch

from semtail.device import select_device
from semtail.evaluate import evaluate_model_file, load_split, read_user_ids, write_outputs, write_per_user
from semtail.run_metrics import CHECKSUMMED_SPLIT_FILES
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging

run = script_run(globals(), "Evaluate a model file on the test split (see docs/metrics.md).")
log = setup_logging(run, "evaluate")
torch.set_num_threads(max(1, int(run.threads)))  # the CPU threads Snakemake gave this job

device = select_device(run.params.device, run.resources.get("gpu", 1))
split = load_split(run.input.train, run.input.test_tr, run.input.test_te)
# The rule's `method` wildcard is the name in the config's `methods:`, which the model file calls its variant;
# its seed param is None for a seed-independent run.
names = {"dataset": "dataset", "variant": "method"}
expected = {key: run.wildcards.get(name) for key, name in names.items() if run.wildcards.get(name) is not None}
if "seed" in run.params.keys():  # noqa: SIM118 (Snakemake's params are a list: `in` tests values)
    expected["seed"] = run.params.seed
# What the run must have been trained with now (the train job's params; by hand, optional), and the split files.
trained_with = None
if run.params.get("hyperparameters") is not None:
    trained_with = {"hyperparameters": plain(run.params.hyperparameters), "code_version": run.params.model_code_version}
split_files = {name: run.input[name] for name in CHECKSUMMED_SPLIT_FILES}
record, result = evaluate_model_file(
    run.input.model,
    split,
    plain(run.params.evaluation),
    device,
    expected,
    run.params.get("code_version"),
    trained_with,
    split_files,
    base_model=run.input.get("base_model"),
)
write_per_user(run.output.per_user, result, read_user_ids(run.input.test_users, result.n_test_users))
write_outputs(record, result, run.output.metrics, run.output.topk, run.output.item_stats)
at_100 = {key: round(value, 4) for key, value in record["metrics"].items() if key.endswith("@100")}
log.info("%s %s seed %s: %s", record["dataset"], record["variant"], record["seed"], at_100)
exit_without_teardown()
