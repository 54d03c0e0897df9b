"""The check of the design, a method is its module: in a temporary copy of the repository,
models/ease.py copied to models/ease_copy.py and `ease_copy` named in `methods:` with ease's
hyperparameters, and no other file touched, runs through the whole workflow and gives metrics
identical to ease's at the same seed."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

from synthetic_data import synthetic_ratings
from workflow_runs import REPO, TEST_CONFIG, copy_repo, snakemake, write_config

pytestmark = pytest.mark.slow

MODELS = "workflow_scripts/semtail/models"


def test_a_copied_method_module_runs_and_matches_its_original(tmp_path, raw_files):
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    shutil.copy2(workdir / MODELS / "ease.py", workdir / MODELS / "ease_copy.py")
    (raw,) = raw_files("ml-100k", synthetic_ratings(seed=3, n_users=300, n_items=120, mean_per_user=25))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {
        "toy": {
            "sources": [{"path": str(raw), "format": "ml-100k"}],
            "preprocess": {"threshold": 3.5, "min_uc": 5, "min_sc": 0, "n_heldout": 30, "seed": 1, "test_prop": 0.2},
        }
    }
    config["evaluation"]["coverage_block_size"] = 10
    config["seeds"] = [0]
    config["compute"]["device"] = "cpu"
    ease = {**config["hyperparameters"]["ease"], "batch_size": 32, "epochs": 3, "patience": 3}
    config["methods"] = ["ease", "ease_copy"]
    config["hyperparameters"] = {"ease": ease, "ease_copy": dict(ease)}
    write_config(workdir, config)

    snakemake(workdir)

    run = {name: workdir / f"results/toy/{name}/seed0" for name in config["methods"]}
    metrics = {name: json.loads((path / "metrics.json").read_text()) for name, path in run.items()}
    assert metrics["ease_copy"]["method"] == "ease_copy"
    assert metrics["ease_copy"]["metrics"] == metrics["ease"]["metrics"]
    models = {name: torch.load(path / "model.pt", weights_only=True) for name, path in run.items()}
    assert models["ease"]["state"]["U"].abs().max() > 0
    assert torch.equal(models["ease_copy"]["state"]["U"], models["ease"]["state"]["U"])
    assert models["ease_copy"]["hyperparameters"] == models["ease"]["hyperparameters"] == ease
    summary = pd.read_csv(workdir / "results/toy/summary.csv")
    assert list(summary["method"]) == ["ease", "ease_copy"]
    assert (workdir / "results/toy/figures/accuracy_coverage_tradeoff.png").stat().st_size > 0
    assert (workdir / TEST_CONFIG).is_file() and not (workdir / "results/toy/adversary.md").exists()
