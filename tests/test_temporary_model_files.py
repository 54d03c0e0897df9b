"""`model_files: temporary` (configs/paper.yaml): Snakemake deletes each model file once every job
reading it is done; the tables and figures read only evaluation files, nothing reruns for the
deleted files, and a change that needs a model again trains exactly the runs it concerns."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from workflow_runs import (
    SYNTHETIC_RUN,
    SYNTHETIC_RUN_FOLDERS,
    SYNTHETIC_RUN_GROUP,
    copy_run,
    job,
    planned_jobs,
    write_config,
)

pytestmark = pytest.mark.slow


@SYNTHETIC_RUN_GROUP
def test_temporary_model_files_are_deleted_once_evaluated_and_retrained_only_where_needed(synthetic_run, tmp_path):
    completed, config = synthetic_run
    assert config["model_files"] == "temporary"
    results = completed / "results" / SYNTHETIC_RUN / "toy"
    assert sorted(results.glob("*/*/model.pt")) == []
    for method, run in SYNTHETIC_RUN_FOLDERS.items():
        assert (results / method / run / "metrics.json").is_file()
    # The adversary's outputs come from POSIT's evaluation files, which carry what its model held.
    record = json.loads((results / "posit" / "seed0" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in record["model"]["history"]] == [1, 2]
    with np.load(results / "posit" / "seed0" / "items.npz") as items:
        weights = items["item_weights"]
    assert weights.shape == (150,) and weights.mean() == pytest.approx(1.0, rel=1e-5)  # w̄ is normalised to mean 1
    with open(results / "adversary.csv") as handle:
        assert sum(1 for _ in handle) == 1 + len(config["methods"])
    assert (results / "figures" / "weight_landscape.png").stat().st_size > 0

    workdir = copy_run(completed, tmp_path / "run")
    assert planned_jobs(workdir) == {}  # the deleted model files are not missing for Snakemake

    # Other evaluation settings need every model again: each run is trained and evaluated again.
    original_ks = config["evaluation"]["ks"]
    changed = copy.deepcopy(config)
    changed["evaluation"]["ks"] = [10, 20, 50, 100]
    write_config(workdir, changed)
    planned = planned_jobs(workdir)
    every_run = {
        job(rule, dataset="toy", method=m, run=run)
        for rule in ("train", "evaluate")
        for m, run in SYNTHETIC_RUN_FOLDERS.items()
    }
    assert every_run <= set(planned)

    # A hyperparameter of ease: ease and rerank on it train again, POSIT and mostpop do not.
    changed["evaluation"]["ks"] = original_ks
    changed["hyperparameters"]["ease"]["lr"] *= 2
    write_config(workdir, changed)
    planned = planned_jobs(workdir)
    trained = {j for j in planned if j.rule == "train"}
    assert trained == {job("train", dataset="toy", method=m, run="seed0") for m in ("ease", "rerank")}
