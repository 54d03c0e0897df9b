"""The metrics of a whole run's top-k lists and per-item counts, on numpy arrays in float64: coverage,
item recall, Gini, the Lorenz curve, and the long tail; and a run's metrics.json as the tables and
figures read it. No torch here, so that the jobs that only
tabulate and plot results (and the planner's checks) do not pay for importing it. Conventions as
in semtail.metrics (EMPTY slots are -1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from semtail.files import read_json, sha256

EMPTY = -1
LIST_LENGTH = 100  # the lists kept in topk.npz; NDCG@100 and the paper's k all fit


def metric_ks(ks) -> list[int]:
    """The ks every evaluation records: the configured ones, and 100 for the paper's NDCG@100, ascending."""
    return sorted({int(k) for k in ks} | {LIST_LENGTH})


# What every reader of a metrics.json needs of it (docs/metrics.md).
RECORD_FIELDS = ("dataset", "variant", "seed", "metrics")


def read_metrics_json(path: str | os.PathLike, fields=RECORD_FIELDS) -> dict:
    """A metrics.json of the evaluate rule, checked to hold `fields`; a missing one is an error
    naming the file and the field (a file of format_version 1 has no `variant`)."""
    record = read_json(path)
    for field in fields:
        if field not in record:
            raise ValueError(f"{path}: no {field!r} field; is this a metric JSON from the evaluate rule?")
    return record


CHECKSUMMED_SPLIT_FILES = ("train", "test_tr", "test_te")  # the split files an evaluation reads, by their input names


def split_checksums(split_files: dict) -> dict[str, str]:
    """The sha256 of each split file by its name (train, test_tr, test_te): what an evaluation
    records in its metrics.json (`split`), and what the tables compare it with."""
    return {name: sha256(path) for name, path in sorted(split_files.items())}


def differences(recorded, expected, key: str) -> list[tuple[str, object, object]]:
    """(key, recorded value, expected value) for each key where they differ; into mappings key by key."""
    if isinstance(recorded, dict) and isinstance(expected, dict):
        found = []
        for name in [*expected, *(name for name in recorded if name not in expected)]:
            found += differences(recorded.get(name), expected.get(name), f"{key}.{name}")
        return found
    return [] if recorded == expected else [(key, recorded, expected)]


def stale_run_differences(record: dict, expected: dict, split: dict[str, str]) -> list[tuple[str, object, object]]:
    """What differs between a metrics.json `record` and what its run must have been trained and
    evaluated with now: `expected`, the run's {hyperparameters, code_version} as the config
    resolves them (the model's code version), and `split`, the current split files' checksums."""
    found = differences(record.get("hyperparameters"), expected["hyperparameters"], "hyperparameters")
    found += differences(
        (record.get("model") or {}).get("code_version"), expected["code_version"], "model.code_version"
    )
    recorded_split = record.get("split") or {}
    found += [
        (f"split.{name}", recorded_split.get(name), value)
        for name, value in split.items()
        if recorded_split.get(name) != value
    ]
    return found


def check_runs_current(metric_paths, expected_runs: dict | None, split_files=None) -> None:
    """Refuses to tabulate or plot a run that was not redone with the current settings: its
    metrics.json records other hyperparameters, another code version of its method, or another
    split than the config resolves to now (`expected_runs`: per name in `methods:`, its
    {hyperparameters, code_version}; `split_files`: a mapping that holds the split files by their
    names in CHECKSUMMED_SPLIT_FILES, such as the rule's input, or None). This happens when a
    retrain failed or was killed and Snakemake was told to go on without it (for example by
    --rerun-triggers without params). The error names each such run, the key that differs and
    both values, and the command that redoes them. None for `expected_runs` (a script run by hand
    without them) checks nothing."""
    if expected_runs is None:
        return
    split = split_checksums(
        {name: split_files[name] for name in CHECKSUMMED_SPLIT_FILES if name in (split_files or {}).keys()}  # noqa: SIM118 (Snakemake's input is a list)
    )
    stale, models = [], []
    for path in [metric_paths] if isinstance(metric_paths, (str, os.PathLike)) else metric_paths:
        record = read_metrics_json(path)
        expected = expected_runs.get(record["variant"])
        if expected is None:
            raise ValueError(f"{path}: a run of {record['variant']!r}, which is not in the config's methods")
        found = stale_run_differences(record, expected, split)
        if found:
            run = f"{record['dataset']}/{record['variant']} seed {record['seed']}"
            stale += [f"  {run} ({path}): {key} is {was!r} there, {now!r} now" for key, was, now in found]
            models.append(str(Path(path).with_name("model.pt")))
    if stale:
        raise ValueError(
            "these results were not redone with the current settings (a retrain that failed or was killed, "
            "then a run that did not redo it), so no table or figure is made of them:\n"
            + "\n".join(stale)
            + "\nredo them: snakemake --cores all --forcerun "
            + " ".join(models)
        )


def coverage_curve(top_k: np.ndarray, block_size: int) -> np.ndarray:
    """Coverage@k for k = 1..K (K = the lists' length), as the paper defines it: the users, in
    their stored order, are cut into consecutive blocks of `block_size`; coverage@k of a block is
    the number of distinct items in the union of its users' top-k lists; the curve averages over
    the full blocks (a last, partial block is left out)."""
    top_k = np.asarray(top_k)
    n_users, length = top_k.shape
    n_blocks = n_users // block_size
    if n_blocks == 0:
        raise ValueError(f"coverage needs at least one full block of {block_size} users, got {n_users} users")
    total = np.zeros(length, dtype=np.float64)
    for block in range(n_blocks):
        lists = top_k[block * block_size : (block + 1) * block_size]
        by_rank = lists.T.ravel()  # every user's first item, then every user's second, ...
        items, first_position = np.unique(by_rank, return_index=True)
        first_rank = first_position[items != EMPTY] // block_size
        total += np.cumsum(np.bincount(first_rank, minlength=length))
    return total / n_blocks


def coverage(top_k: np.ndarray, k: int, block_size: int) -> float:
    """The paper's Coverage@k; see `coverage_curve`."""
    if k > np.shape(top_k)[1]:
        raise ValueError(f"coverage@{k} needs lists of at least {k} items, got {np.shape(top_k)[1]}")
    return float(coverage_curve(np.asarray(top_k)[:, :k], block_size)[k - 1])


def item_recall(hit_counts: np.ndarray, heldout_counts: np.ndarray) -> tuple[float, float]:
    """The paper's Item Recall@k from per-item counts: hit_counts[i] users hold item i out and get it
    in their top k, of heldout_counts[i] who hold it out. Returns the mean of hits/held-out over all
    catalog items (an item nobody holds out counts 0), and over the items somebody holds out."""
    hit_counts = np.asarray(hit_counts, dtype=np.float64)
    heldout_counts = np.asarray(heldout_counts, dtype=np.float64)
    if np.any(hit_counts > heldout_counts):
        raise ValueError("an item has more hits than users who hold it out")
    held = heldout_counts > 0
    if not held.any():
        raise ValueError("item recall is undefined: no item is held out by any user")
    per_item = np.zeros_like(hit_counts)
    per_item[held] = hit_counts[held] / heldout_counts[held]
    return float(per_item.mean()), float(per_item[held].mean())


def gini(exposure_counts: np.ndarray) -> float:
    """The Gini index of exposure over all catalog items: with x sorted ascending and i = 1..n,
    G = sum_i (2i - n - 1) x_i / (n sum_i x_i), which equals the mean absolute difference over all
    ordered item pairs divided by twice the mean. 0: every item equally exposed; (n-1)/n: one item
    gets all exposure."""
    x = np.sort(np.asarray(exposure_counts, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() <= 0:
        raise ValueError("the Gini index needs at least one item with positive exposure")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))


def lorenz_curve(exposure_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of exposure: the share of items (least exposed first) against the share of
    all exposure they receive, as n + 1 points from (0, 0) to (1, 1)."""
    x = np.sort(np.asarray(exposure_counts, dtype=np.float64))
    if x.sum() <= 0:
        raise ValueError("the Lorenz curve needs at least one item with positive exposure")
    item_share = np.arange(x.size + 1) / x.size
    exposure_share = np.concatenate([[0.0], np.cumsum(x) / x.sum()])
    return item_share, exposure_share


def long_tail_items(popularity: np.ndarray, interaction_share: float) -> np.ndarray:
    """Bool per item: the long tail, the least popular items that together hold at most
    `interaction_share` of all training interactions.

    Item i is in the tail iff the items at most as popular as i (itself and every tie included)
    together hold at most that share. Items of equal popularity are therefore all in or all out,
    and the popularity level that would take the total past the share is out. Items without
    training interactions are always in the tail.
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    if not 0 < interaction_share < 1:
        raise ValueError(f"tail interaction share must lie in (0, 1), got {interaction_share}")
    if popularity.size == 0 or np.any(popularity < 0) or popularity.sum() <= 0:
        raise ValueError("popularity must be non-negative with at least one interaction")
    levels, inverse = np.unique(popularity, return_inverse=True)
    held_at_or_below = np.cumsum(levels * np.bincount(inverse, minlength=levels.size))
    # a relative tolerance, so that a level holding exactly the share is in despite rounding
    in_tail = held_at_or_below <= interaction_share * popularity.sum() * (1 + 1e-12)
    return in_tail[inverse]
