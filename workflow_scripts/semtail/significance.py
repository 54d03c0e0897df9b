"""Which differences between methods are real: paired tests over the test users.

For each user-level metric (NDCG, Recall, hit rate, ARP at each k: the columns of per_user.csv),
each method is compared with a reference method on the same test users:

1. each user's value is averaged over the seeds of each method (a user without held-out items has
   no value and is left out), so that the unit of the tests is the user and the seeds' noise is
   averaged away rather than counted as evidence;
2. the differences d_u = method_u − reference_u go into a two-sided Wilcoxon signed-rank test
   (scipy.stats.wilcoxon: zero differences dropped, the exact distribution for up to 50 users
   without ties or zeros, else the normal approximation) and a paired t-test
   (scipy.stats.ttest_rel). When every difference is exactly zero, both p-values are 1 (scipy
   returns NaN, or raises, there): the methods agree on every user, which is no evidence of a
   difference;
3. the mean difference gets a 95% percentile bootstrap interval: `samples` resamplings of the
   users with replacement, drawn by numpy's default_rng(seed), recorded in the table;
4. Holm's step-down correction of the Wilcoxon p-values over the methods compared for the metric:
   with the m p-values sorted, p_(i) becomes max over j <= i of min(1, (m − j + 1) p_(j)).
   A difference is significant when this corrected p is below alpha.

Coverage, item recall, Gini and the long-tail share describe the set of lists given to all test
users, not one user; they have no per-user values and are not tested here (their spread over
seeds is in the summary tables).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "dataset", "method", "reference", "metric", "n_users", "n_seeds", "reference_n_seeds",
    "mean", "reference_mean", "mean_difference", "ci_low", "ci_high",
    "p_wilcoxon", "p_ttest", "p_holm", "significant", "alpha", "n_bootstrap", "bootstrap_seed",
]  # fmt: skip
CONFIDENCE = 0.95
BOOTSTRAP_CHUNK = 1000  # resamplings drawn at once, to bound memory on large test sets


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1 when all are zero."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def ttest_p(values, reference) -> float:
    """Two-sided paired t-test p-value; 1 when every difference is zero."""
    from scipy import stats

    values, reference = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if values.size < 2:
        return math.nan
    if np.all(values == reference):
        return 1.0
    return float(stats.ttest_rel(values, reference).pvalue)


def bootstrap_interval(differences, samples: int, seed: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference: resample the users with replacement."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        stop = min(samples, start + BOOTSTRAP_CHUNK)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = finite.size
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


# ---- a dataset's runs --------------------------------------------------------------------------

TRUNCATED_ADVICE = "the file is damaged (truncated?): delete it and the metrics.json beside it, and its evaluate job runs again"


def read_per_user(path: str | Path) -> pd.DataFrame:
    """per_user.csv, users as text (raw ids), indexed by user. A file cut short (empty, its last
    line without a line break, or a row with fewer cells than the header) is an error naming it."""
    check_whole_csv(path)
    frame = pd.read_csv(path, dtype={"user": str})
    if "user" not in frame.columns:
        raise ValueError(f"{path}: no 'user' column; is this a per_user.csv of the evaluate rule?")
    if frame["user"].duplicated().any():
        raise ValueError(f"{path}: user {frame['user'][frame['user'].duplicated()].iloc[0]!r} appears twice")
    return frame.set_index("user")


def check_whole_csv(path: str | Path) -> None:
    """The evaluate rule writes every line of per_user.csv with its line break and every cell."""
    with open(path, "rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            raise ValueError(f"{path}: empty; {TRUNCATED_ADVICE}")
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            raise ValueError(f"{path}: its last line has no line break, so it is cut short; {TRUNCATED_ADVICE}")
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        for number, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {number} has {len(row)} of the header's {len(header)} cells; {TRUNCATED_ADVICE}")


def user_means(runs: pd.DataFrame, metric_paths, per_user_paths) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Per method (the runs' names in `methods:`), each user's metrics averaged over its seeds,
    and its number of seeds. runs: semtail.tables.load_runs of `metric_paths`, whose `method`
    names each run; per_user_paths: each run's per_user.csv, beside its metrics.json, in the
    same order."""
    metric_paths, per_user_paths, methods = list(metric_paths), list(per_user_paths), list(runs["method"])
    if not len(methods) == len(metric_paths) == len(per_user_paths):
        raise ValueError(
            f"{len(methods)} runs, {len(metric_paths)} metric files and {len(per_user_paths)} per-user files"
        )
    by_method: dict[str, list[pd.DataFrame]] = {}
    users, first = None, None
    for method, metrics_path, per_user_path in zip(methods, metric_paths, per_user_paths):
        if Path(metrics_path).parent != Path(per_user_path).parent:
            raise ValueError(f"{per_user_path} is not beside {metrics_path}")
        frame = read_per_user(per_user_path).drop(columns=["n_heldout"], errors="ignore")
        if users is None:
            users, first = list(frame.index), per_user_path
        elif set(frame.index) != set(users):
            raise ValueError(
                f"{per_user_path} and {first} hold different test users ({len(frame)} and {len(users)} of them)"
            )
        by_method.setdefault(method, []).append(frame.loc[users])
    means = {method: pd.concat(frames).groupby(level=0, sort=False).mean() for method, frames in by_method.items()}
    return means, {method: len(frames) for method, frames in by_method.items()}


def compare(
    means: dict[str, pd.DataFrame],
    n_seeds: dict[str, int],
    *,
    dataset: str,
    reference: str,
    samples: int,
    seed: int,
    alpha: float,
) -> pd.DataFrame:
    """One row per (method other than the reference, user-level metric), metric-major in the
    order of the per-user columns, methods in their order; see the module docstring."""
    if reference not in means:
        raise ValueError(f"compare.reference: {reference!r} has no runs on {dataset} (runs: {', '.join(means)})")
    base = means[reference]
    rows = []
    for metric in base.columns:
        block = []
        for method, frame in means.items():
            if method == reference:
                continue
            paired = pd.concat([frame[metric], base[metric].reindex(frame.index)], axis=1, keys=["m", "r"]).dropna()
            d = (paired["m"] - paired["r"]).to_numpy()
            low, high = bootstrap_interval(d, samples, seed)
            block.append({
                "dataset": dataset, "method": method, "reference": reference, "metric": metric,
                "n_users": len(paired), "n_seeds": n_seeds[method], "reference_n_seeds": n_seeds[reference],
                "mean": float(paired["m"].mean()) if len(paired) else math.nan,
                "reference_mean": float(paired["r"].mean()) if len(paired) else math.nan,
                "mean_difference": float(d.mean()) if d.size else math.nan,
                "ci_low": low, "ci_high": high,
                "p_wilcoxon": wilcoxon_p(d), "p_ttest": ttest_p(paired["m"], paired["r"]),
                "alpha": alpha, "n_bootstrap": samples, "bootstrap_seed": seed,
            })  # fmt: skip
        for row, adjusted in zip(block, holm([row["p_wilcoxon"] for row in block])):
            row["p_holm"] = float(adjusted)
            row["significant"] = bool(adjusted < alpha)
        rows += block
    return pd.DataFrame(rows, columns=COLUMNS)

