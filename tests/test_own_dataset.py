"""A user's own dataset, end to end: a small CSV with text ids, `;` as the separator, its columns in
another order than user, item, rating and no timestamp, run through the whole workflow from the
config that README.md's "Your own dataset" shows (only its path changed, and two epochs instead of
50). The split is checked against the Liang et al. steps written out here in plain Python, and a
run whose files are deleted afterwards is planned again."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from semtail import plan
from workflow_runs import REPO, copy_repo, copy_run, job, planned_jobs, snakemake

# One worker runs the module, so that its shared run (shop_run) is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own-dataset")]

CONFIG_NAME = "my-data.yaml"
README_PATH = "/data/shop.csv"


def readme_config() -> dict:
    """The YAML block of README.md's "Your own dataset" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own dataset", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return yaml.safe_load(block)


def shop_rows(seed: int = 7, n_users: int = 200, n_items: int = 160) -> list[tuple[str, str, int]]:
    """Unique (customer, product, stars) rows in a random order; ids are text whose order as text is
    not their numeric order (c10 < c9), and item popularity is skewed."""
    rng = np.random.default_rng(seed)
    customers = [f"c{n}" for n in rng.choice(np.arange(1, 5000), size=n_users, replace=False)]
    products = [f"p-{n:x}" for n in rng.choice(np.arange(1, 50000), size=n_items, replace=False)]
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    popularity /= popularity.sum()
    rows = []
    for customer in customers:
        for product in rng.choice(products, size=int(rng.integers(12, 30)), replace=False, p=popularity):
            rows.append((customer, str(product), int(rng.choice([1, 2, 3, 4, 4, 5, 5, 5]))))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_shop_csv(path: Path, rows) -> None:
    """Columns in another order than the roles: stars;product;customer."""
    path.write_text("stars;product;customer\n" + "".join(f"{r};{i};{u}\n" for u, i, r in rows))


def expected_split(rows, settings: dict) -> tuple[dict[str, list[str]], list[str], dict[str, int]]:
    """Liang et al.'s split, step by step: ratings above the threshold; users with at least min_uc of
    them (min_sc is 0); users ordered as text, permuted by RandomState(seed); the last 2·n_heldout are
    validation, then test users; items are the training users' in order of first appearance; each
    validation or test user with n >= 5 interactions on those items holds out int(test_prop·n)."""
    assert settings["min_sc"] == 0
    positives = [(u, i) for u, i, r in rows if r > settings["threshold"]]
    per_user = Counter(u for u, _ in positives)
    kept = [(u, i) for u, i in positives if per_user[u] >= settings["min_uc"]]
    users = sorted({u for u, _ in kept})
    shuffled = [users[j] for j in np.random.RandomState(settings["seed"]).permutation(len(users))]
    n, h = len(users), settings["n_heldout"]
    parts = {"train": shuffled[: n - 2 * h], "validation": shuffled[n - 2 * h : n - h], "test": shuffled[n - h :]}
    training = set(parts["train"])
    items: list[str] = []
    for user, item in kept:
        if user in training and item not in items:
            items.append(item)
    known = set(items)
    interactions = {"train": sum(user in training for user, _ in kept)}
    for part in ("validation", "test"):
        members = set(parts[part])
        counts = Counter(user for user, item in kept if user in members and item in known)
        held_out = sum(int(settings["test_prop"] * c) for c in counts.values() if c >= 5)
        interactions[f"{part}_te"] = held_out
        interactions[f"{part}_tr"] = sum(counts.values()) - held_out
    return parts, items, interactions


@pytest.fixture(scope="session")  # on the one worker of the module's group: made once
def shop_run(tmp_path_factory):
    """The workflow run to the end on the shop CSV, in a copy of the repository."""
    root = tmp_path_factory.mktemp("own-dataset")
    workdir = copy_repo(root / "repo", raw_cache=False)
    rows = shop_rows()
    csv = root / "shop.csv"
    write_shop_csv(csv, rows)
    config = readme_config()
    [source] = config["datasets"]["shop"]["sources"]
    assert source["path"] == README_PATH and "timestamp" not in source["columns"]
    source["path"] = str(csv)
    config["hyperparameters"]["ease"].update(epochs=2, patience=2)
    config["compute"]["device"] = "cpu"
    (workdir / CONFIG_NAME).write_text(yaml.safe_dump(config, sort_keys=False))
    done = snakemake(workdir, configfile=CONFIG_NAME)
    return workdir, rows, config, done


def test_the_split_matches_the_steps_written_out(shop_run):
    workdir, rows, config, _ = shop_run
    settings = config["datasets"]["shop"]["preprocess"]
    parts, items, interactions = expected_split(rows, settings)
    processed = workdir / plan.processed_dir(config, "shop")
    for part, users in parts.items():
        assert (processed / f"{part}_users.txt").read_text().splitlines() == users, part
    assert (processed / "items.txt").read_text().splitlines() == items
    assert len(items) >= max(config["evaluation"]["ks"])  # the README's ks fit this catalog
    stats = json.loads((processed / "stats.json").read_text())
    for name, count in interactions.items():
        assert stats["matrices"][name]["interactions"] == count, name
    assert stats["users_per_part"] == {part: len(users) for part, users in parts.items()}
    assert stats["raw"]["format"] == "delimited" and stats["data_warnings"] == {}


def test_every_method_is_evaluated_and_tabled(shop_run):
    workdir, _, config, done = shop_run
    summary = pd.read_csv(workdir / "results/shop/summary.csv")
    assert sorted(summary["method"]) == sorted(config["methods"])
    for method in config["methods"]:
        run = "seed0" if method == "ease" else "seed-independent"  # mostpop and ease_closed run once
        metrics = json.loads((workdir / f"results/shop/{method}/{run}/metrics.json").read_text())
        assert (
            metrics["dataset"] == "shop"
            and metrics["n_test_users"] == config["datasets"]["shop"]["preprocess"]["n_heldout"]
        )
    download_log = (workdir / "logs/download/shop.log").read_text()
    assert "cannot be verified" in download_log  # a path: source without a checksum


def test_a_runs_deleted_files_are_made_again(shop_run, tmp_path):
    """After a complete run, deleting a run's files, or only its evaluation's (as a failed evaluation
    job leaves it), plans them again, and the tables and figures after them, though those are newer."""
    workdir = copy_run(shop_run[0], tmp_path / "run")
    assert "Nothing to be done" in snakemake(workdir, "--dry-run", configfile=CONFIG_NAME).stdout
    for path in (workdir / "results/shop/ease/seed0").iterdir():
        path.unlink()
    for name in ("metrics.json", "topk.npz", "items.npz"):
        (workdir / "results/shop/mostpop/seed-independent" / name).unlink()
    planned = planned_jobs(workdir, configfile=CONFIG_NAME)
    assert set(planned) == {
        job("train", dataset="shop", method="ease", run="seed0"),
        job("evaluate", dataset="shop", method="ease", run="seed0"),
        job("evaluate", dataset="shop", method="mostpop", run="seed-independent"),
        job("aggregate", dataset="shop"),
        job("plot", dataset="shop"),
        job("resources_table"),  # it reads every job's benchmark record
    }
    for method, run in (("ease", "seed0"), ("mostpop", "seed-independent")):
        reason = planned[job("evaluate", dataset="shop", method=method, run=run)]
        assert "Missing output files" in reason and f"results/shop/{method}/{run}/metrics.json" in reason


def test_experiments_splitting_one_dataset_otherwise_keep_their_own_splits(tmp_path):
    """Two experiments on the same own data with other n_heldout: the second makes a split of its
    own beside the first's, and the first then plans nothing. (Before the splits were keyed by their
    settings, the second rewrote the first's split, and the first's rerun replanned everything.)"""
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    rows = shop_rows(n_users=60, n_items=50)
    csv = tmp_path / "shop.csv"
    write_shop_csv(csv, rows)
    base = readme_config()
    base["datasets"]["shop"]["sources"][0]["path"] = str(csv)
    base.update(methods=["mostpop"], hyperparameters={"mostpop": {}}, compute={"device": "cpu", "gpus_per_job": 1})
    base["evaluation"].update(ks=[5, 10], coverage_block_size=5)
    configs = {}
    for experiment, n_heldout in (("first", 10), ("second", 12)):
        config = {**base, "experiment": experiment}
        config["datasets"] = {
            "shop": {
                **base["datasets"]["shop"],
                "preprocess": {**base["datasets"]["shop"]["preprocess"], "n_heldout": n_heldout},
            }
        }
        (workdir / f"{experiment}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        configs[experiment] = config

    def summary(experiment):
        return f"results/{experiment}/shop/summary.md"

    for experiment in configs:
        snakemake(workdir, summary(experiment), configfile=f"{experiment}.yaml")
    folders = {experiment: workdir / plan.processed_dir(config, "shop") for experiment, config in configs.items()}
    assert folders["first"] != folders["second"] and folders["first"].parent == folders["second"].parent
    for experiment, n_heldout in (("first", 10), ("second", 12)):
        stats = json.loads((folders[experiment] / "stats.json").read_text())
        assert stats["users_per_part"]["test"] == n_heldout and stats["preprocess"]["n_heldout"] == n_heldout
        assert len((folders[experiment] / "test_users.txt").read_text().splitlines()) == n_heldout
        metrics = json.loads((workdir / f"results/{experiment}/shop/mostpop/seed-independent/metrics.json").read_text())
        assert metrics["n_test_users"] == n_heldout
    for experiment in configs:
        done = snakemake(workdir, "--dry-run", summary(experiment), configfile=f"{experiment}.yaml")
        assert "Nothing to be done" in done.stdout, (experiment, done.stdout[-3000:])
