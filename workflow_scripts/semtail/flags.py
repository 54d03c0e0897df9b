"""What summary.md warns of beside its tables: a method whose seeds disagree by more than its
difference from the reference, and a method on a base run whose test lists equal its base's (it
changed nothing at its settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from semtail import registry
from semtail.run_metrics import RECORD_FIELDS, read_metrics_json
from semtail.significance import seed_pairs

DISAGREEMENT_COLUMNS = ["method", "reference", "metric", "seed_min", "seed_max", "mean", "reference_mean", "difference"]
UNCHANGED_COLUMNS = ["method", "base", "seed_pairs", "n_users"]


def seed_disagreements(runs: pd.DataFrame, reference: str, unchanged: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (method with two seeds or more, other than the reference; metric): the method's lowest
    and highest value over its seeds where their range exceeds |mean − reference's mean|, the
    difference the tables show. runs: semtail.tables.load_runs; methods and metrics in its order.
    A method of `unchanged` (unchanged_on_base) whose base is the reference is left out: its lists
    are the reference's, which its own flag says."""
    metric_keys = [c for c in runs.columns if c not in ("dataset", "method", "seed")]
    reference_runs = runs[runs["method"] == reference]
    if reference_runs.empty:
        raise ValueError(f"compare.reference: {reference!r} has no runs (runs: {', '.join(pd.unique(runs['method']))})")
    same_as_reference = set() if unchanged is None else set(unchanged.loc[unchanged["base"] == reference, "method"])
    rows = []
    for method in pd.unique(runs["method"]):
        group = runs[runs["method"] == method]
        if method == reference or method in same_as_reference or len(group) < 2:
            continue
        for key in metric_keys:
            values = group[key].astype(float)
            mean, reference_mean = float(values.mean()), float(reference_runs[key].astype(float).mean())
            if values.max() - values.min() > abs(mean - reference_mean):
                rows.append(
                    {
                        "method": method,
                        "reference": reference,
                        "metric": key,
                        "seed_min": float(values.min()),
                        "seed_max": float(values.max()),
                        "mean": mean,
                        "reference_mean": reference_mean,
                        "difference": mean - reference_mean,
                    }
                )
    return pd.DataFrame(rows, columns=DISAGREEMENT_COLUMNS)


def unchanged_on_base(metric_paths, topk_paths) -> pd.DataFrame:
    """The runs' names (`methods:`) trained on a base run whose masked test lists (topk.npz's top_k)
    equal their base's for every test user, in every seed pair (semtail.significance.seed_pairs); a
    base without runs among these is not compared. Each topk.npz is beside its metrics.json."""
    metric_paths, topk_paths = list(metric_paths), list(topk_paths)
    if len(metric_paths) != len(topk_paths):
        raise ValueError(f"{len(metric_paths)} metric files and {len(topk_paths)} top-k files")
    lists: dict[str, dict[int, str]] = {}
    bases: dict[str, str] = {}
    for metrics_path, topk_path in zip(metric_paths, topk_paths):
        if Path(metrics_path).parent != Path(topk_path).parent:
            raise ValueError(f"{topk_path} is not beside {metrics_path}")
        record = read_metrics_json(metrics_path, RECORD_FIELDS + ("method",))
        name = record["variant"]
        lists.setdefault(name, {})[None if record["seed"] is None else int(record["seed"])] = topk_path
        if registry.declaration(record["method"]).training == "on_base":
            base = record.get("hyperparameters", {}).get(registry.BASE)
            if base is None:
                raise ValueError(f"{metrics_path}: a {record['method']} run without hyperparameters.{registry.BASE}")
            bases[name] = base
    rows = []
    for name, base in bases.items():
        if base not in lists:
            continue
        pairs = seed_pairs(lists[name], lists[base], name, base)
        n_users = None
        for method_seed, base_seed in pairs:
            ours, theirs = top_k(lists[name][method_seed]), top_k(lists[base][base_seed])
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                break
            n_users = ours.shape[0]
        else:
            rows.append({"method": name, "base": base, "seed_pairs": len(pairs), "n_users": n_users})
    return pd.DataFrame(rows, columns=UNCHANGED_COLUMNS)


def top_k(path) -> np.ndarray:
    with np.load(path) as stored:
        if "top_k" not in stored:
            raise ValueError(f"{path}: no 'top_k' array; is this a topk.npz of the evaluate rule?")
        return stored["top_k"]
