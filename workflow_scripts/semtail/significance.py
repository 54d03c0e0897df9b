"""Which differences between methods are real: paired tests over the test users, checked over seeds.

For each user-level metric (NDCG, Recall, hit rate, ARP at each k: the columns of per_user.csv),
each method is compared with a reference method on the same test users and seeds:

1. the runs are paired by seed (the method's seed s with the reference's seed s); a method or
   reference with a single run (seed-independent) is paired with every run of the other. Each pair
   gives a difference d_su = method_su − reference_su per user with held-out items (the others
   have no value and are left out);
2. over users: each user's differences are averaged over the pairs, d_u, so that the unit is the
   user; the d_u go into a two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon: zero
   differences dropped, the exact distribution for up to 50 users without ties or zeros, else the
   normal approximation) and a paired t-test (scipy.stats.ttest_rel). When every difference is
   exactly zero, both p-values are 1 (scipy returns NaN, or raises, there): the methods agree on
   every user, which is no evidence of a difference;
3. over seeds: each pair's mean difference over the users, e_s; with 3 pairs or more, a two-sided
   paired t-test of the method's per-seed means against the reference's (`p_seeds`; NaN with fewer
   pairs, where it has at most one degree of freedom). The difference reverses over seeds when some
   e_s has the sign opposite to the overall mean difference;
4. the mean difference gets a 95% percentile bootstrap interval that resamples both levels: each
   of `samples` resamplings draws the pairs (seeds) and, independently, the users with
   replacement, and takes the mean of d over the drawn seeds × drawn users (the pigeonhole
   bootstrap of a crossed design, Owen 2007), drawn by numpy's default_rng(seed), recorded in the
   table. With one pair it is the bootstrap of the users;
5. Holm's step-down correction of the Wilcoxon p-values over the methods compared for the metric:
   with the m p-values sorted, p_(i) becomes max over j <= i of min(1, (m − j + 1) p_(j)).
   A difference is significant when this corrected p is below alpha and it does not reverse over
   seeds (with a single pair, the users' test alone decides).

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
    "dataset",
    "method",
    "reference",
    "metric",
    "n_users",
    "n_seeds",
    "reference_n_seeds",
    "paired_seeds",
    "mean",
    "reference_mean",
    "mean_difference",
    "ci_low",
    "ci_high",
    "p_wilcoxon",
    "p_ttest",
    "p_holm",
    "seed_difference_min",
    "seed_difference_max",
    "p_seeds",
    "seeds_agree",
    "significant",
    "alpha",
    "n_bootstrap",
    "bootstrap_seed",
]
CONFIDENCE = 0.95
BOOTSTRAP_CHUNK = 1000  # resamplings drawn at once, at most,
BOOTSTRAP_CHUNK_VALUES = 5_000_000  # and at most this many users drawn at once, to bound memory
MIN_SEED_PAIRS = 3  # for the test over seeds


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
    """Two-sided paired t-test p-value; 1 when every difference is zero, 0 when every difference
    is the same other number (the t statistic is infinite)."""
    from scipy import stats

    values, reference = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if values.size < 2:
        return math.nan
    differences = values - reference
    if np.all(differences == 0):
        return 1.0
    if np.all(differences == differences[0]):
        return 0.0
    return float(stats.ttest_rel(values, reference).pvalue)


def bootstrap_interval(differences, samples: int, seed: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference. `differences`: one per user, or one
    row per seed pair and one column per user; each resampling draws the rows and, independently,
    the users with replacement, and takes the mean over the drawn rows × drawn users."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim == 1:
        d = d[np.newaxis, :]
    n_seeds, n_users = d.shape
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, min(BOOTSTRAP_CHUNK, BOOTSTRAP_CHUNK_VALUES // n_users))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        if n_seeds == 1:
            seed_means = np.broadcast_to(d[0], (stop - start, n_users))
        else:
            drawn = rng.integers(0, n_seeds, size=(stop - start, n_seeds))
            weights = (drawn[:, :, np.newaxis] == np.arange(n_seeds)).mean(axis=1)  # each seed's share of the draws
            seed_means = weights @ d
        users = rng.integers(0, n_users, size=(stop - start, n_users))
        means[start:stop] = np.take_along_axis(seed_means, users, axis=1).mean(axis=1)
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

TRUNCATED_ADVICE = (
    "the file is damaged (truncated?): delete it and the metrics.json beside it, and its evaluate job runs again"
)


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
                raise ValueError(
                    f"{path}: line {number} has {len(row)} of the header's {len(header)} cells; {TRUNCATED_ADVICE}"
                )


def user_values(runs: pd.DataFrame, metric_paths, per_user_paths) -> dict[str, dict[int, pd.DataFrame]]:
    """Per method (the runs' names in `methods:`) and seed, each user's metrics. runs:
    semtail.tables.load_runs of `metric_paths`, whose `method` and `seed` name each run;
    per_user_paths: each run's per_user.csv, beside its metrics.json, in the same order."""
    metric_paths, per_user_paths = list(metric_paths), list(per_user_paths)
    names = list(zip(runs["method"], runs["seed"]))
    if not len(names) == len(metric_paths) == len(per_user_paths):
        raise ValueError(
            f"{len(names)} runs, {len(metric_paths)} metric files and {len(per_user_paths)} per-user files"
        )
    values: dict[str, dict[int, pd.DataFrame]] = {}
    users, first = None, None
    for (method, seed), metrics_path, per_user_path in zip(names, metric_paths, per_user_paths):
        if Path(metrics_path).parent != Path(per_user_path).parent:
            raise ValueError(f"{per_user_path} is not beside {metrics_path}")
        frame = read_per_user(per_user_path).drop(columns=["n_heldout"], errors="ignore")
        if users is None:
            users, first = list(frame.index), per_user_path
        elif set(frame.index) != set(users):
            raise ValueError(
                f"{per_user_path} and {first} hold different test users ({len(frame)} and {len(users)} of them)"
            )
        values.setdefault(method, {})[None if seed is None else int(seed)] = frame.loc[users]
    return values


def seed_pairs(method_seeds, reference_seeds, method: str, reference: str) -> list[tuple[int, int]]:
    """(method seed, reference seed) pairs: equal seeds when both have the same ones; a single run
    (a seed-independent method) paired with every run of the other."""
    method_seeds, reference_seeds = sorted(method_seeds), sorted(reference_seeds)
    if method_seeds == reference_seeds:
        return [(s, s) for s in method_seeds]
    if len(method_seeds) == 1:
        return [(method_seeds[0], s) for s in reference_seeds]
    if len(reference_seeds) == 1:
        return [(s, reference_seeds[0]) for s in method_seeds]
    raise ValueError(
        f"{method} (seeds {method_seeds}) and {reference} (seeds {reference_seeds}) cannot be paired by seed: "
        "they need the same seeds, or one of them a single run"
    )


def seed_test_p(method_seed_means, reference_seed_means) -> float:
    """Two-sided paired t-test over seed pairs of the per-seed means; NaN for fewer than
    MIN_SEED_PAIRS pairs, 1 when they are all equal."""
    if len(method_seed_means) < MIN_SEED_PAIRS:
        return math.nan
    return ttest_p(method_seed_means, reference_seed_means)


def compare(
    values: dict[str, dict[int, pd.DataFrame]],
    *,
    dataset: str,
    reference: str,
    samples: int,
    seed: int,
    alpha: float,
) -> pd.DataFrame:
    """One row per (method other than the reference, user-level metric), metric-major in the
    order of the per-user columns, methods in their order; see the module docstring. values:
    user_values."""
    if reference not in values:
        raise ValueError(f"compare.reference: {reference!r} has no runs on {dataset} (runs: {', '.join(values)})")
    base = values[reference]
    columns = next(iter(base.values())).columns
    pairs = {
        method: seed_pairs(runs, base, method, reference) for method, runs in values.items() if method != reference
    }
    rows = []
    for metric in columns:
        block = []
        for method, method_pairs in pairs.items():
            frame = pd.concat(
                [values[method][m][metric] - base[r][metric] for m, r in method_pairs]
                + [values[method][m][metric] for m, _ in method_pairs]
                + [base[r][metric] for _, r in method_pairs],
                axis=1,
            ).dropna()
            n = len(method_pairs)
            d = frame.iloc[:, :n].to_numpy().T  # seed pairs × users
            method_values, reference_values = frame.iloc[:, n : 2 * n].to_numpy(), frame.iloc[:, 2 * n :].to_numpy()
            per_user = d.mean(axis=0)
            method_user_means, reference_user_means = method_values.mean(axis=1), reference_values.mean(axis=1)
            per_seed = d.mean(axis=1) if d.size else np.full(n, math.nan)
            mean_difference = float(per_user.mean()) if per_user.size else math.nan
            low, high = bootstrap_interval(d, samples, seed)
            block.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "reference": reference,
                    "metric": metric,
                    "n_users": per_user.size,
                    "n_seeds": len(values[method]),
                    "reference_n_seeds": len(base),
                    "paired_seeds": n,
                    "mean": float(method_user_means.mean()) if per_user.size else math.nan,
                    "reference_mean": float(reference_user_means.mean()) if per_user.size else math.nan,
                    "mean_difference": mean_difference,
                    "ci_low": low,
                    "ci_high": high,
                    "p_wilcoxon": wilcoxon_p(per_user),
                    "p_ttest": ttest_p(method_user_means, reference_user_means),
                    "seed_difference_min": float(per_seed.min()),
                    "seed_difference_max": float(per_seed.max()),
                    "p_seeds": seed_test_p(method_values.mean(axis=0), reference_values.mean(axis=0)),
                    "seeds_agree": bool(not np.any(per_seed * mean_difference < 0)),
                    "alpha": alpha,
                    "n_bootstrap": samples,
                    "bootstrap_seed": seed,
                }
            )
        for row, adjusted in zip(block, holm([row["p_wilcoxon"] for row in block])):
            row["p_holm"] = float(adjusted)
            row["significant"] = bool(adjusted < alpha and row["seeds_agree"])
        rows += block
    return pd.DataFrame(rows, columns=COLUMNS)
