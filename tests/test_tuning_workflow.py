"""The hyperparameter search as a stage of the real workflow, in a copy of the completed demo run:
the candidates are planned and run, the selection picks the best validation metric, the model
files carry exactly the chosen hyperparameters, and a new candidate reruns only itself and the
selection unless it wins. Also the per-user files and the significance table of the demo run.

The search is over the closed-form EASE's l2: deterministic and quick to train. On the demo
split, validation NDCG@100 is 0.347 for l2 = 1, 0.374 for 2, 0.483 for 25 and 0.541 for 400."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from semtail import plan
from workflow_runs import job, output_times, planned_jobs, read_config, snakemake, write_config

pytestmark = pytest.mark.slow

DATASET = "ml-100k"
METHOD = "ease_closed"
# Every table, but no figure: drawing them would take most of the time.
TABLES = (f"results/{DATASET}/summary.csv", f"results/{DATASET}/tuning.csv")


def search(workdir: Path, values: list[float]) -> dict:
    config = read_config(workdir)
    config["tuning"] = {"metric": "ndcg@100", "seed": 0, "grids": {METHOD: {"l2": values}}}
    write_config(workdir, config)
    return config


def run_and_see_rewritten(workdir: Path) -> set[str]:
    before = output_times(workdir)
    snakemake(workdir, *TABLES)
    after = output_times(workdir)
    return {path for path, mtime in after.items() if before.get(path) != mtime}


def candidate_scores(workdir: Path) -> dict[float, float]:
    """Validation NDCG@100 of every candidate, read from the candidates' own files."""
    scores = {}
    for path in (workdir / f"results/{DATASET}/{METHOD}/tuning").glob("*/validation.json"):
        record = json.loads(path.read_text())
        assert record["split"] == "validation" and record["seed"] == 0
        scores[record["settings"]["l2"]] = record["metrics"]["ndcg@100"]
    return scores


def selected(workdir: Path) -> dict:
    return yaml.safe_load((workdir / f"results/{DATASET}/{METHOD}/selected.yaml").read_text())


def model_hyperparameters(workdir: Path) -> dict:
    """Of the closed-form EASE's one run: it gives the same result for every seed."""
    model = torch.load(workdir / f"results/{DATASET}/{METHOD}/seed-independent/model.pt", weights_only=True)
    return model["hyperparameters"]


def runs_of(paths: set[str]) -> set[tuple[str, str]]:
    """(method, run folder) of the rewritten files under results/<dataset>/<method>/seed<s>/ (or seed-independent/)."""
    return {
        (Path(p).parts[2], Path(p).parts[3])
        for p in paths
        if len(Path(p).parts) == 5 and Path(p).parts[3].startswith("seed")
    }


def test_search_selects_the_best_candidate_and_reruns_only_what_a_new_one_changes(demo_copy):
    search(demo_copy, [1.0, 25.0])
    planned = planned_jobs(demo_copy)
    candidates = {j for j in planned if j.rule == "tune_candidate"}
    assert {dict(j.wildcards)["method"] for j in candidates} == {METHOD} and len(candidates) == 2
    assert job("select_hyperparameters", dataset=DATASET, method=METHOD) in planned

    rewritten = run_and_see_rewritten(demo_copy)
    scores = candidate_scores(demo_copy)
    assert set(scores) == {1.0, 25.0}
    chosen = selected(demo_copy)
    assert chosen["settings"] == {"l2": max(scores, key=scores.get)} == {"l2": 25.0}
    assert chosen["hyperparameters"] == {"l2": 25.0} and chosen["metric"] == "ndcg@100"
    assert {c["settings"]["l2"]: c["metrics"]["ndcg@100"] for c in chosen["candidates"]} == scores
    assert model_hyperparameters(demo_copy) == chosen["hyperparameters"]
    # the configured l2 (400) gave way to the choice: that method's one run and nothing else's
    assert runs_of(rewritten) == {(METHOD, "seed-independent")}
    assert f"results/{DATASET}/tuning.md" in rewritten and f"results/{DATASET}/summary.md" in rewritten
    assert planned_jobs(demo_copy, *TABLES) == {}

    # A third value that loses: its candidate and the selection run, no train job.
    search(demo_copy, [1.0, 2.0, 25.0])
    rewritten = run_and_see_rewritten(demo_copy)
    assert scores[25.0] > candidate_scores(demo_copy)[2.0]
    assert runs_of(rewritten) == set()
    assert {p for p in rewritten if "/tuning/" in p} == {
        f"results/{DATASET}/{METHOD}/tuning/{c['name']}/validation.json"
        for c in selected(demo_copy)["candidates"]
        if c["settings"] == {"l2": 2.0}
    }
    assert rewritten <= {p for p in rewritten if "/tuning/" in p} | {
        f"results/{DATASET}/{METHOD}/selected.yaml",
        f"results/{DATASET}/tuning.csv",
        f"results/{DATASET}/tuning.md",
    }
    assert selected(demo_copy)["settings"] == {"l2": 25.0}

    # A fourth that wins: that method is retrained with it, and only that method.
    search(demo_copy, [1.0, 2.0, 25.0, 400.0])
    rewritten = run_and_see_rewritten(demo_copy)
    scores = candidate_scores(demo_copy)
    assert max(scores, key=scores.get) == 400.0
    assert selected(demo_copy)["hyperparameters"] == {"l2": 400.0}
    assert runs_of(rewritten) == {(METHOD, "seed-independent")}
    assert model_hyperparameters(demo_copy) == {"l2": 400.0}

    # The HTML report shows the search: its table, captioned.
    snakemake(demo_copy, "--report", "report.html", *TABLES)
    html = (demo_copy / "report.html").read_text()
    assert "tuning.csv" in html and "Hyperparameter search" in html and "significance.csv" in html
    assert "every candidate of every searched" in html and "{{ snakemake" not in html


def test_a_search_over_seeds_adds_only_the_new_seeds_jobs_and_selects_by_the_mean(demo_copy):
    """ease (SGD, 2 epochs) over two learning rates: first with `seed: 0`, then with `seeds: [0, 1]`.
    The runs are cut to what the search feeds: one seed of ease, and mostpop to test it against."""
    config = read_config(demo_copy)
    config["methods"], config["seeds"] = ["mostpop", "ease"], [0]
    config["tuning"] = {"metric": "ndcg@100", "seed": 0, "grids": {"ease": {"lr": [0.001, 0.01]}}}
    write_config(demo_copy, config)
    snakemake(demo_copy, *TABLES)
    folder = demo_copy / f"results/{DATASET}/ease/tuning"
    first_seed = {path: path.stat().st_mtime_ns for path in folder.glob("*/validation.json")}
    assert len(first_seed) == 2

    del config["tuning"]["seed"]
    config["tuning"]["seeds"] = [0, 1]
    write_config(demo_copy, config)
    candidate_jobs = {j for j in planned_jobs(demo_copy, *TABLES) if j.rule.startswith("tune_candidate")}
    assert {(j.rule, dict(j.wildcards)["seed"]) for j in candidate_jobs} == {("tune_candidate_seed", "1")}
    assert len(candidate_jobs) == 2
    snakemake(demo_copy, *TABLES)
    assert {path: path.stat().st_mtime_ns for path in folder.glob("*/validation.json")} == first_seed

    records = {}
    for path in folder.glob("*/validation.json"):
        candidate = path.parent.name
        second = json.loads((path.parent / "seed1/validation.json").read_text())
        first = json.loads(path.read_text())
        assert (first["seed"], second["seed"]) == (0, 1) and first["settings"] == second["settings"]
        records[candidate] = (first["metrics"]["ndcg@100"], second["metrics"]["ndcg@100"])
        log = demo_copy / f"logs/tune_candidate/{DATASET}/ease/{candidate}.seed1.log"
        assert f"candidate {candidate}, seed 1: {first['settings']}" in log.read_text().splitlines()[0]
    means = {candidate: (a + b) / 2 for candidate, (a, b) in records.items()}
    chosen = selected_of(demo_copy, "ease")
    assert chosen["seeds"] == [0, 1] and chosen["chosen"] == max(means, key=means.get)
    for entry in chosen["candidates"]:
        a, b = records[entry["name"]]
        assert entry["metrics"]["ndcg@100"] == pytest.approx(means[entry["name"]], rel=1e-12)
        assert entry["sd"]["ndcg@100"] == pytest.approx(abs(a - b) / 2**0.5, rel=1e-9)
    # two values: whichever wins is the smallest or the largest of its grid, and the tables say so
    edge = "smallest" if chosen["settings"]["lr"] == 0.001 else "largest"
    assert chosen["at_grid_edge"] == {"lr": edge}
    table = pd.read_csv(demo_copy / f"results/{DATASET}/tuning.csv", keep_default_na=False)
    assert table.loc[table["chosen"], "at_grid_edge"].tolist() == [f"lr={chosen['settings']['lr']} ({edge})"]
    assert set(table["n_seeds"]) == {2}
    summary = (demo_copy / f"results/{DATASET}/summary.md").read_text()
    assert f"- ease: the search chose lr={chosen['settings']['lr']} ({edge}) of its grid" in summary


def selected_of(workdir: Path, name: str) -> dict:
    return yaml.safe_load((workdir / f"results/{DATASET}/{name}/selected.yaml").read_text())


def test_per_user_means_are_the_metrics_and_the_tables_test_against_ease(completed_demo):
    config = read_config(completed_demo)
    results = completed_demo / "results" / DATASET
    test_users = (completed_demo / plan.evaluation_inputs(config, DATASET)["test_users"]).read_text().split()
    for method in config["methods"]:
        for seed in plan.run_seeds(config, DATASET, method):
            run = results / method / plan.run_folder(seed)
            per_user = pd.read_csv(run / "per_user.csv", dtype={"user": str})
            metrics = json.loads((run / "metrics.json").read_text())["metrics"]
            assert per_user["user"].tolist() == test_users
            for key in per_user.columns[2:]:
                assert per_user[key].mean() == pytest.approx(metrics[key], rel=1e-12), (method, seed, key)
    table = pd.read_csv(results / "significance.csv")
    assert set(table["reference"]) == {"ease"} and "ease" not in set(table["method"])
    assert set(table["metric"]) == set(per_user.columns[2:])
    assert len(table) == (len(config["methods"]) - 1) * (len(per_user.columns) - 2)
    # Over seeds, from the metrics.json of each seed (each the mean of its per_user.csv column):
    # p_seeds is the paired t-test of the per-seed values, seeds_agree their differences' signs.
    seeds = config["seeds"]
    metric = "ndcg@100"
    # a seed-independent method's one run stands beside every seed of the reference
    per_seed = {
        method: [
            json.loads(
                (
                    results
                    / method
                    / plan.run_folder(None if plan.seed_independent(config, DATASET, method) else s)
                    / "metrics.json"
                ).read_text()
            )["metrics"][metric]
            for s in seeds
        ]
        for method in config["methods"]
    }
    for _, row in table[table["metric"] == metric].iterrows():
        assert row["paired_seeds"] == len(seeds)
        differences = np.subtract(per_seed[row["method"]], per_seed["ease"])
        assert (row["seed_difference_min"], row["seed_difference_max"]) == pytest.approx(
            (differences.min(), differences.max()), abs=1e-12
        )
        if len(seeds) < 3:
            assert np.isnan(row["p_seeds"])  # no test over fewer than 3 seeds
        elif np.ptp(differences) > 1e-12:
            assert row["p_seeds"] == pytest.approx(
                stats.ttest_rel(per_seed[row["method"]], per_seed["ease"]).pvalue, rel=1e-6
            )
        agree = not np.any(differences * row["mean_difference"] < 0)
        assert row["significant"] == (row["p_holm"] < row["alpha"] and agree), row["method"]
    summary = (results / "summary.md").read_text()
    assert "## Significance against ease" in summary and "no per-user values" in summary
    assert (results / "summary.tex").read_text().count(r"\begin{table}") >= 4
