"""`model_files: temporary` (configs/paper.yaml): Snakemake deletes each model file once every job
reading it is done; the tables and figures read only evaluation files, nothing reruns for the
deleted files, and a change that needs a model again trains exactly the runs it concerns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workflow_runs import copy_repo, job, planned_jobs, snakemake, synthetic_config, write_config

pytestmark = pytest.mark.slow


def toy_config() -> dict:
    shape = {"users": 600, "items": 150, "interactions": 12_000, "seed": 4}
    return synthetic_config("temporary-models", ["ease", "rerank", "posit"], shape) | {"model_files": "temporary"}


def test_temporary_model_files_are_deleted_once_evaluated_and_retrained_only_where_needed(tmp_path):
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    config = toy_config()
    write_config(workdir, config)
    snakemake(workdir, cores=2)
    results = workdir / "results" / "temporary-models" / "toy"
    assert sorted(results.glob("*/*/model.pt")) == []
    for method in config["methods"]:
        assert (results / method / "seed0" / "metrics.json").is_file()
    # The adversary's outputs come from POSIT's evaluation files, which carry what its model held.
    record = json.loads((results / "posit" / "seed0" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in record["model"]["history"]] == [1, 2]
    with np.load(results / "posit" / "seed0" / "items.npz") as items:
        weights = items["item_weights"]
    assert weights.shape == (150,) and weights.mean() == pytest.approx(1.0, rel=1e-5)  # w̄ is normalised to mean 1
    with open(results / "adversary.csv") as handle:
        assert sum(1 for _ in handle) == 1 + len(config["methods"])
    assert (results / "figures" / "weight_landscape.png").stat().st_size > 0

    assert planned_jobs(workdir) == {}  # the deleted model files are not missing for Snakemake

    # Other evaluation settings need every model again: each run is trained and evaluated again.
    original_ks = config["evaluation"]["ks"]
    config["evaluation"]["ks"] = [10, 20, 50, 100]
    write_config(workdir, config)
    planned = planned_jobs(workdir)
    runs = {
        job(rule, dataset="toy", method=m, run="seed0") for rule in ("train", "evaluate") for m in config["methods"]
    }
    assert runs <= set(planned)

    # A hyperparameter of ease: ease and rerank on it train again, POSIT does not.
    config["evaluation"]["ks"] = original_ks
    config["hyperparameters"]["ease"]["lr"] *= 2
    write_config(workdir, config)
    planned = planned_jobs(workdir)
    trained = {j for j in planned if j.rule == "train"}
    assert trained == {job("train", dataset="toy", method=m, run="seed0") for m in ("ease", "rerank")}
