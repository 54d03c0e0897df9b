"""Choose a method's hyperparameters from its candidates' validation metrics (each the mean over
the search seeds): selected.yaml.

Snakemake runs it from rules/tuning.smk (a checkpoint: the train jobs read the choice). By hand:

    python workflow_scripts/select_hyperparameters.py \\
        --input candidates=results/ml-100k/ease/tuning/a1b2c3d4e5/validation.json,... \\
        --output selected=/tmp/selected.yaml --param dataset=ml-100k --param method=ease \\
        --param trains=ease --param metric=ndcg@100 --param 'within={}' --param 'seeds=[0]'
"""

from semtail.files import read_json
from semtail.script_io import exit_without_teardown, plain, script_run, setup_logging
from semtail.selection import selected_document, write_selected

run = script_run(globals(), "Choose a method's hyperparameters from its candidates' validation metrics.")
log = setup_logging(run, "select_hyperparameters")
paths = run.input.candidates
paths = [paths] if isinstance(paths, str) else list(paths)
records = [read_json(path) for path in paths]
for path, record in zip(paths, records):
    if record.get("dataset") != run.params.dataset or record.get("method") != run.params.method:
        raise ValueError(
            f"{path}: a candidate of {record.get('dataset')}/{record.get('method')}, "
            f"expected {run.params.dataset}/{run.params.method}"
        )
document = selected_document(
    dataset=str(run.params.dataset),
    name=str(run.params.method),
    method=str(run.params.trains),
    records=records,
    metric=str(run.params.metric),
    within=plain(run.params.within),
    seeds=[int(seed) for seed in run.params.seeds],
)
write_selected(run.output.selected, document)
chosen = next(c for c in document["candidates"] if c["chosen"])
log.info(
    "%s %s: chose %s %s (%s)",
    document["dataset"],
    document["method"],
    document["chosen"],
    document["settings"],
    chosen["metrics"],
)
exit_without_teardown()
