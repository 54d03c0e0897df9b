"""The workflow's planning logic, kept out of the Snakefiles so it can be tested without Snakemake:
which files to build, the resolved hyperparameters of a job, and the resources it requests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from semtail.provenance import code_version  # noqa: F401  (re-exported for rules/common.smk)

FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz")
TABLES = ("summary.csv", "summary.md", "paper_comparison.csv", "paper_comparison.md")
WEIGHTED_METHOD = "posit"


class ConfigError(ValueError):
    """A config that passed the schema but does not make sense as a whole."""


def check_config(config: dict) -> None:
    """Checks across keys that a JSON schema cannot express, naming the offending key."""
    for method in config["methods"]:
        if method not in config["hyperparameters"]:
            raise ConfigError(f"methods: {method!r} has no entry under hyperparameters")
    for dataset, per_method in config.get("overrides", {}).items():
        if dataset not in config["datasets"]:
            raise ConfigError(f"overrides: {dataset!r} is not a configured dataset")
        for method, values in per_method.items():
            if method not in config["hyperparameters"]:
                raise ConfigError(f"overrides.{dataset}: {method!r} is not a configured method")
            unknown = set(values) - set(config["hyperparameters"][method])
            if unknown:
                raise ConfigError(
                    f"overrides.{dataset}.{method}: {sorted(unknown)} are not hyperparameters of "
                    f"{method} (known: {sorted(config['hyperparameters'][method])})"
                )
    if "rerank" in config["methods"]:
        base = config["hyperparameters"]["rerank"]["base"]
        if base not in config["methods"]:
            raise ConfigError(f"hyperparameters.rerank.base: {base!r} must also be in methods")


def dataset_config(config: dict, dataset: str) -> dict:
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ConfigError(f"datasets: no dataset named {dataset!r}") from None


def resolve_hyperparameters(config: dict, dataset: str, method: str) -> dict:
    """The method's defaults with the dataset's overrides applied: exactly what the job uses."""
    resolved = copy.deepcopy(config["hyperparameters"][method])
    resolved.update(config.get("overrides", {}).get(dataset, {}).get(method, {}))
    return resolved


def processed_dir(dataset: str) -> str:
    return f"data/processed/{dataset}"


def run_dir(dataset: str, method: str, seed) -> str:
    return f"results/{dataset}/{method}/seed{seed}"


def train_inputs(config: dict, dataset: str, method: str, seed) -> dict:
    split = processed_dir(dataset)
    inputs = {
        "train": f"{split}/train.npz",
        "validation_tr": f"{split}/validation_tr.npz",
        "validation_te": f"{split}/validation_te.npz",
        "stats": f"{split}/stats.json",
    }
    if method == "rerank":
        base = resolve_hyperparameters(config, dataset, method)["base"]
        inputs["base_model"] = f"{run_dir(dataset, base, seed)}/model.pt"
    return inputs


def run_files(config: dict, dataset: str) -> dict[str, list[str]]:
    """Every (method, seed) run's evaluation outputs of a dataset, method-major, plus the training split."""
    runs = [run_dir(dataset, m, s) for m in config["methods"] for s in config["seeds"]]
    return {
        "metrics": [f"{r}/metrics.json" for r in runs],
        "topk": [f"{r}/topk.npz" for r in runs],
        "item_stats": [f"{r}/items.npz" for r in runs],
        "train": f"{processed_dir(dataset)}/train.npz",
    }


def weight_landscape_models(config: dict, dataset: str) -> list[str]:
    return [f"{run_dir(dataset, WEIGHTED_METHOD, s)}/model.pt" for s in config["seeds"]]


def final_targets(config: dict) -> list[str]:
    targets = []
    for dataset in config["datasets"]:
        targets += [f"results/{dataset}/{name}" for name in TABLES]
        figures = list(FIGURES)
        if WEIGHTED_METHOD in config["methods"]:
            figures.append("weight_landscape")
        targets += [f"results/{dataset}/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    return targets


def gpus_per_job(config: dict) -> int:
    return 0 if config["compute"]["device"] == "cpu" else int(config["compute"]["gpus_per_job"])


def dataset_size(config: dict, dataset: str) -> dict:
    """Users, items and interactions: measured (stats.json) once preprocessing ran, else the
    config's `expected` sizes, else a small demo-sized guess."""
    stats_file = Path(processed_dir(dataset)) / "stats.json"
    if stats_file.is_file():
        stats = json.loads(stats_file.read_text())
        return {k: int(stats[k]) for k in ("users", "items", "interactions")}
    expected = dataset_config(config, dataset).get("expected", {})
    users = int(expected.get("users", 10_000))
    items = int(expected.get("items", 5_000))
    interactions = int(expected.get("interactions", users * 100))
    return {"users": users, "items": items, "interactions": interactions}


def resources(config: dict, stage: str, dataset: str, attempt: int = 1) -> dict:
    """mem_mb and runtime (minutes) for a job, from the dataset's size; a retry asks for more."""
    size = dataset_size(config, dataset)
    items, interactions = size["items"], size["interactions"]
    dense_item_item_mb = items * items * 4 / 2**20
    sparse_mb = interactions * 12 / 2**20
    if stage == "preprocess":
        # Raw ratings held by pandas: about 40 bytes a row before filtering, which removes ~half.
        mem_mb = 2048 + 100 * sparse_mb
        runtime = 30 + interactions // 2_000_000
    elif stage == "train":
        # U, its gradient, its momentum, the best epoch's copy and the checkpoint being written.
        mem_mb = 2048 + 5 * dense_item_item_mb + 4 * sparse_mb
        runtime = 60 + int(dense_item_item_mb * interactions / 2e9)
    elif stage == "evaluate":
        mem_mb = 2048 + 2 * dense_item_item_mb + 4 * sparse_mb
        runtime = 30 + int(dense_item_item_mb / 100)
    elif stage == "plot":
        mem_mb = 2048 + dense_item_item_mb + 4 * sparse_mb
        runtime = 30
    else:
        raise ValueError(f"no resource model for stage {stage!r}")
    return {"mem_mb": int(mem_mb * attempt), "runtime": int(runtime * attempt)}
