"""Evaluating one trained model on the test users: top-k lists from the fold-in rows, the metrics of
docs/metrics.md, and the per-user lists and per-item counts that the tables and figures use."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from semtail import metrics, run_metrics
from semtail.device import describe
from semtail.files import atomic_path, sha256, write_json
from semtail.modelfile import load_model, scorer
from semtail.models.base import read_interactions
from semtail.provenance import code_version, environment

log = logging.getLogger(__name__)

# The metrics with a value per test user (metrics.json holds their means over the users with
# held-out items); the others (coverage, item recall, Gini, tail share) describe the set of lists.
USER_METRICS = ("ndcg", "recall", "hit_rate", "arp")
FORMAT_VERSION = (
    4  # 2: the record names its run's `variant`; 3: it holds its split files' checksums; 4: its model's history
)

USERS_NOTE = (
    "ndcg, recall, hit_rate and arp average over the test users with at least one held-out item "
    "(n_test_users - n_excluded_users of them). coverage, coverage_unmasked, gini and tail_share "
    "describe the lists recommended to all n_test_users test users, with or without held-out "
    "items, in their stored order (the rows of test_tr.npz). item_recall involves only users who "
    "hold the item out, so excluded users never enter it."
)
LISTS_NOTE = (
    "Lists rank the model's scores, higher first, ties to the lower item index. Masked lists "
    "(every metric but coverage_unmasked) never hold a user's fold-in items: a user with fewer "
    "than k other items gets a shorter list, whose empty slots are neither hits nor exposure."
)


def definitions(block_size: int, tail_share: float) -> dict[str, str]:
    """What each metric key means, written into every metric JSON."""
    return {
        "users": USERS_NOTE,
        "lists": LISTS_NOTE,
        "ndcg@k": "Binary gains, discount 1/log2(rank+1); the ideal DCG uses min(k, #held-out) items "
        "(recsys_metrics.normalized_dcg on our lists).",
        "recall@k": "Held-out items in the top k divided by min(k, #held-out) (Liang et al. 2018).",
        "hit_rate@k": "1 if any held-out item is in the top k, else 0 (recsys_metrics.hit_rate).",
        "coverage@k": f"Test users in stored order cut into consecutive blocks of {block_size}; per block "
        "the number of distinct items in the union of its users' masked top-k lists; mean over the "
        "full blocks (a last partial block is left out).",
        "coverage_unmasked@k": "coverage@k of lists ranked without masking fold-in items, as the "
        "POSIT authors' code computed it; the paper's Coverage@k.",
        "item_recall@k": "Per item: of the test users who hold it out, the fraction who get it in "
        "their top k. Mean over all catalog items, an item nobody holds out counting 0 (the paper's "
        "Item Recall@k).",
        "item_recall@k_pos": "The same mean over only the items at least one test user holds out.",
        "gini@k": "Gini index of exposure over all catalog items, exposure = the number of test "
        "users whose top k holds the item; with x sorted ascending, "
        "sum_i (2i - n - 1) x_i / (n sum x) = mean absolute difference / (2 mean).",
        "arp@k": "Average recommendation popularity: per test user, the mean training popularity "
        "(number of training users with the item) of the items in the top k; mean over the test users "
        "with at least one held-out item.",
        "tail_share@k": "Filled top-k slots holding a long-tail item, over all filled top-k slots of "
        "all test users. Long tail: item i is in it iff the items at most as popular as i (training "
        f"popularity, ties included) together hold at most {tail_share:g} of all training interactions; "
        "so equally popular items are all in or all out, and the popularity level that would pass "
        f"{tail_share:g} is out. See long_tail for the resulting set.",
    }


@dataclass(frozen=True)
class Split:
    """The training users' matrix and the test users' fold-in and held-out rows, all binary CSR."""

    train: sp.csr_matrix
    fold_in: sp.csr_matrix
    heldout: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def n_test_users(self) -> int:
        return self.fold_in.shape[0]


def load_split(train: str | Path, test_tr: str | Path, test_te: str | Path) -> Split:
    split = Split(read_interactions(train), read_interactions(test_tr), read_interactions(test_te))
    if split.fold_in.shape != split.heldout.shape:
        raise ValueError(
            f"{test_tr} is {split.fold_in.shape} but {test_te} is {split.heldout.shape}: "
            "fold-in and held-out rows must be the same test users"
        )
    if split.fold_in.shape[1] != split.n_items:
        raise ValueError(f"{test_tr} has {split.fold_in.shape[1]} items but {train} has {split.n_items}")
    overlap = split.fold_in.multiply(split.heldout).nnz
    if overlap:
        raise ValueError(f"{test_tr} and {test_te} share {overlap} (user, item) pairs; they must be disjoint")
    return split


@dataclass
class Evaluation:
    metrics: dict[str, float]
    definitions: dict[str, str]
    n_test_users: int
    n_excluded_users: int
    n_items: int
    long_tail: dict
    lists: dict[str, np.ndarray] = field(repr=False)  # topk.npz
    item_stats: dict[str, np.ndarray] = field(repr=False)  # items.npz
    # per_user.csv: each user-level metric per test user, in row order; NaN for a user without
    # held-out items, whom the means in `metrics` leave out.
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _dense_rows(matrix: sp.csr_matrix, start: int, stop: int, device: torch.device) -> torch.Tensor:
    rows = matrix[start:stop]
    row_of_entry = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    dense = torch.zeros(rows.shape, dtype=torch.float32, device=device)
    dense[torch.from_numpy(row_of_entry).to(device), torch.from_numpy(rows.indices.astype(np.int64)).to(device)] = 1.0
    return dense


def check_ks(ks, n_items: int, dataset: str | None = None) -> None:
    """The configured ks against the catalog, before anything is loaded: a top-k list longer than the
    catalog would only be padded with empty slots."""
    too_large = sorted(int(k) for k in ks if int(k) > n_items)
    if too_large:
        raise ValueError(
            f"evaluation.ks: {too_large} {'is' if len(too_large) == 1 else 'are'} larger than the {n_items} items of "
            f"{dataset or 'the dataset'} (its preprocessed split): lists cannot hold more items than the catalog; "
            f"give ks of at most {n_items}"
        )


def evaluate(
    score: Callable[[torch.Tensor], torch.Tensor],
    split: Split,
    *,
    ks,
    coverage_block_size: int,
    tail_interaction_share: float,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Scores the test users in batches and computes every metric of docs/metrics.md.

    `score` maps a dense (users × items) float32 fold-in tensor on `device` to scores of the
    same shape, higher is better.
    """
    device = torch.device(device)
    n_users = split.n_test_users
    if n_users < coverage_block_size:
        raise ValueError(
            f"evaluation.coverage_block_size is {coverage_block_size}, but there are only {n_users} test "
            "users: coverage needs at least one full block"
        )
    popularity = np.asarray(split.train.sum(axis=0), dtype=np.int64).ravel()
    totals = Totals(
        run_metrics.metric_ks(ks), popularity, run_metrics.long_tail_items(popularity, tail_interaction_share), device
    )
    with torch.inference_mode():
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            fold_in = _dense_rows(split.fold_in, start, stop, device)
            scores = score(fold_in)
            if tuple(scores.shape) != tuple(fold_in.shape):
                raise ValueError(
                    f"the model's scores have shape {tuple(scores.shape)}, expected {tuple(fold_in.shape)}"
                )
            if torch.isnan(scores).any():
                raise ValueError(f"the model scored NaN for test users {start}..{stop - 1}")
            totals.add(scores, fold_in, _dense_rows(split.heldout, start, stop, device))
            log.info("scored test users %d..%d of %d", start, stop - 1, n_users)
    return totals.evaluation(split, coverage_block_size, tail_interaction_share)


# The order of the metrics in metrics.json: by metric, then by k.
METRIC_ORDER = (
    "ndcg",
    "recall",
    "hit_rate",
    "coverage",
    "coverage_unmasked",
    "item_recall",
    "gini",
    "arp",
    "tail_share",
)


class Totals:
    """What the batches of test users add up to: their lists, their user-level metrics, and per item
    and k the held-out, hit and exposure counts and the filled and long-tail slots."""

    def __init__(self, ks: list[int], popularity: np.ndarray, is_tail: np.ndarray, device: torch.device):
        n_items = len(popularity)
        self.ks, self.popularity, self.is_tail = ks, popularity, is_tail
        self.popularity_on_device = torch.as_tensor(popularity, device=device)
        self.tail_on_device = torch.as_tensor(is_tail, device=device)
        self.per_user = {f"{name}@{k}": [] for name in USER_METRICS for k in ks}
        self.lists, self.lists_unmasked = [], []
        self.heldout_count = torch.zeros(n_items, dtype=torch.long, device=device)
        self.hits = {k: torch.zeros(n_items, dtype=torch.long, device=device) for k in ks}
        self.exposure = {k: torch.zeros(n_items, dtype=torch.long, device=device) for k in ks}
        self.tail_filled = {k: [0, 0] for k in ks}

    def add(self, scores: torch.Tensor, fold_in: torch.Tensor, heldout: torch.Tensor) -> None:
        """One batch: its scores, fold-in rows and held-out rows, dense on the device."""
        top = metrics.recommend(scores, max(self.ks), exclude=fold_in)
        self.lists.append(top.cpu())
        self.lists_unmasked.append(metrics.recommend(scores, max(self.ks)).cpu())
        self.heldout_count += heldout.sum(dim=0).long()
        for k in self.ks:
            self.per_user[f"ndcg@{k}"].append(metrics.ndcg(top, heldout, k).cpu())
            self.per_user[f"recall@{k}"].append(metrics.recall(top, heldout, k).cpu())
            self.per_user[f"hit_rate@{k}"].append(metrics.hit_rate(top, heldout, k).cpu())
            self.per_user[f"arp@{k}"].append(metrics.mean_list_popularity(top, self.popularity_on_device, k).cpu())
            self.hits[k] += metrics.item_hit_counts(top, heldout, k)
            self.exposure[k] += metrics.exposure(top, len(self.popularity), k)
            in_tail, filled = metrics.tail_slots(top, self.tail_on_device, k)
            self.tail_filled[k][0] += in_tail
            self.tail_filled[k][1] += filled

    def evaluation(self, split: Split, coverage_block_size: int, tail_interaction_share: float) -> Evaluation:
        """The metrics of all the batches added, which must be every test user of `split`."""
        ks, popularity, is_tail = self.ks, self.popularity, self.is_tail
        top_k = torch.cat(self.lists).numpy().astype(np.int32)
        top_k_unmasked = torch.cat(self.lists_unmasked).numpy().astype(np.int32)
        per_user = {key: torch.cat(values).double().numpy() for key, values in self.per_user.items()}
        n_heldout = np.diff(split.heldout.indptr)
        has_heldout = n_heldout > 0
        if not has_heldout.any():
            raise ValueError("no test user has a held-out item: test_te.npz is empty")
        heldout_count = self.heldout_count.cpu().numpy()
        hits = {k: v.cpu().numpy() for k, v in self.hits.items()}
        exposure = {k: v.cpu().numpy() for k, v in self.exposure.items()}
        coverage = run_metrics.coverage_curve(top_k, coverage_block_size)
        coverage_unmasked = run_metrics.coverage_curve(top_k_unmasked, coverage_block_size)
        by_metric = {name: {} for name in METRIC_ORDER}
        for k in ks:
            for name in USER_METRICS:
                by_metric[name][f"{name}@{k}"] = float(np.mean(per_user[f"{name}@{k}"][has_heldout]))
            by_metric["coverage"][f"coverage@{k}"] = float(coverage[k - 1])
            by_metric["coverage_unmasked"][f"coverage_unmasked@{k}"] = float(coverage_unmasked[k - 1])
            item_recall = by_metric["item_recall"]
            item_recall[f"item_recall@{k}"], item_recall[f"item_recall@{k}_pos"] = run_metrics.item_recall(
                hits[k], heldout_count
            )
            by_metric["gini"][f"gini@{k}"] = run_metrics.gini(exposure[k])
            in_tail, filled = self.tail_filled[k]
            by_metric["tail_share"][f"tail_share@{k}"] = in_tail / filled
        values = {key: value for name in METRIC_ORDER for key, value in by_metric[name].items()}
        bad = [key for key, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"metrics {bad} are not finite")
        return Evaluation(
            metrics=values,
            definitions=definitions(coverage_block_size, tail_interaction_share),
            n_test_users=split.n_test_users,
            n_excluded_users=int(np.sum(~has_heldout)),
            n_items=split.n_items,
            long_tail={
                "interaction_share_asked": float(tail_interaction_share),
                "interaction_share_held": float(popularity[is_tail].sum() / popularity.sum()),
                "n_items": int(is_tail.sum()),
                "max_popularity": int(popularity[is_tail].max()) if is_tail.any() else None,
            },
            lists={
                "top_k": top_k,
                "top_k_unmasked": top_k_unmasked,
                "n_heldout": n_heldout.astype(np.int32),
                "n_fold_in": np.diff(split.fold_in.indptr).astype(np.int32),
            },
            item_stats={
                "ks": np.asarray(ks, dtype=np.int64),
                "heldout_count": heldout_count,
                "train_popularity": popularity,
                "is_long_tail": is_tail,
                **{f"hits_at_{k}": hits[k] for k in ks},
                **{f"exposure_at_{k}": exposure[k] for k in ks},
            },
            per_user={key: np.where(has_heldout, values, np.nan) for key, values in per_user.items()},
        )


def evaluate_as_configured(score, split: Split, evaluation: dict, device: torch.device) -> Evaluation:
    """`evaluate` with the config's `evaluation:` settings."""
    return evaluate(
        score,
        split,
        ks=evaluation["ks"],
        coverage_block_size=int(evaluation["coverage_block_size"]),
        tail_interaction_share=float(evaluation["tail_interaction_share"]),
        batch_size=int(evaluation["batch_size"]),
        device=device,
    )


def evaluate_model_file(
    model_path: str | Path,
    split: Split,
    evaluation: dict,
    device: torch.device,
    expected: dict | None = None,
    stage_code_version: str | None = None,
    trained_with: dict | None = None,
    split_files: dict | None = None,
    base_model: str | Path | None = None,
) -> tuple[dict, Evaluation]:
    """Loads a model file, evaluates it and returns the metric JSON's record with the evaluation.

    `expected` (dataset, variant, seed; a seed of None for a seed-independent run), when given,
    must match what the model file says it is; so must `trained_with`, the run's {hyperparameters,
    code_version} as the config resolves them now (the rule's params). `base_model`, when given,
    must be the base model file that the model file refers to (the evaluate job's input).
    `stage_code_version`: the evaluate stage's code version where the caller has it (the rule's
    params), else computed here. `split_files` (train, test_tr, test_te by name): their checksums
    go into the record, for the tables to compare with the split they read.
    """
    started = time.perf_counter()
    check_ks(evaluation["ks"], split.n_items, (expected or {}).get("dataset"))
    model = load_model(model_path)
    check_model(model, model_path, split, expected, trained_with, base_model)
    result = evaluate_as_configured(scorer(model, device), split, evaluation, device)
    if model.get("item_weights") is not None:  # POSIT's, for the figures, which then need no model file
        result.item_stats["item_weights"] = np.asarray(model["item_weights"], dtype=np.float64).ravel()
    record = {
        "format_version": FORMAT_VERSION,
        "dataset": model["dataset"],
        "method": model["method"],
        "variant": model["variant"],
        "seed": model["seed"],
        "hyperparameters": model["hyperparameters"],
        "n_test_users": result.n_test_users,
        "n_excluded_users": result.n_excluded_users,
        "n_items": result.n_items,
        "metrics": result.metrics,
        "definitions": result.definitions,
        "long_tail": result.long_tail,
        "evaluation": {k: evaluation[k] for k in ("ks", "coverage_block_size", "tail_interaction_share", "batch_size")},
        "split": run_metrics.split_checksums(split_files or {}),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "device": describe(device),
        "code_version": stage_code_version or code_version("evaluate"),
        "model": {
            "path": str(model_path),
            "sha256": sha256(model_path),
            "code_version": model.get("code_version"),
            "best_epoch": model.get("best_epoch"),
            "history": model.get("history") or [],
            "train_seconds": model.get("train_seconds"),
            "device": (model.get("environment") or {}).get("device"),
            "base": None if model["base"] is None else {key: model["base"][key] for key in ("path", "sha256")},
        },
        "environment": environment(),
    }
    return record, result


def check_model(
    model: dict, model_path: str | Path, split: Split, expected: dict | None, trained_with: dict | None, base_model
) -> None:
    """That a loaded model file is the one evaluate_model_file's caller expects (see there), and fits the split."""
    for key, value in (expected or {}).items():
        if str(model.get(key)) != str(value):
            raise ValueError(f"{model_path}: the model file says {key}={model.get(key)!r}, expected {value!r}")
    if trained_with is not None:
        found = run_metrics.differences(
            model.get("hyperparameters"), trained_with["hyperparameters"], "hyperparameters"
        )
        found += run_metrics.differences(model.get("code_version"), trained_with["code_version"], "code_version")
        if found:
            raise ValueError(
                f"{model_path} was not trained with the current settings: "
                + "; ".join(f"{key} is {was!r} there, {now!r} now" for key, was, now in found)
                + f". Retrain it: snakemake --cores all --forcerun {model_path}"
            )
    if base_model is not None:
        referred = (model["base"] or {}).get("path")
        if referred is None or not Path(referred).resolve() == Path(base_model).resolve():
            raise ValueError(
                f"{model_path}: refers to the base model file {referred}, but the job's base is {base_model}"
            )
    if int(model["n_items"]) != split.n_items:
        raise ValueError(f"{model_path}: the model has {model['n_items']} items, the split has {split.n_items}")


def write_outputs(record: dict, result: Evaluation, metrics_path, topk_path, item_stats_path) -> None:
    """topk.npz and items.npz first, the metric JSON last; each appears whole or not at all."""
    with atomic_path(topk_path) as tmp:
        np.savez_compressed(tmp, **result.lists)
    with atomic_path(item_stats_path) as tmp:
        np.savez_compressed(tmp, **result.item_stats)
    write_json(metrics_path, record)


def read_user_ids(path: str | Path, n_users: int) -> list[str]:
    """The raw ids of a split's users, one a line in row order (data/processed/{d}/{p}/test_users.txt)."""
    ids = Path(path).read_text().splitlines()
    if len(ids) != n_users:
        raise ValueError(f"{path}: {len(ids)} user ids, but the split has {n_users} users")
    return ids


def write_per_user(path: str | Path, result: Evaluation, users: list[str]) -> None:
    """per_user.csv: one row per test user in row order, its raw id (`user`), its number of
    held-out items and each user-level metric; empty where a user has no held-out item. The
    column means over the non-empty cells are the values in metrics.json. Floats are written
    in Python's shortest exact form, so reading them back gives the same doubles. `users`: one
    per test user (read_user_ids checks their number)."""
    keys = list(result.per_user)
    n_heldout = result.lists["n_heldout"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "n_heldout", *keys])
        for row, user in enumerate(users):
            values = (result.per_user[key][row] for key in keys)
            writer.writerow([user, int(n_heldout[row]), *("" if math.isnan(v) else repr(float(v)) for v in values)])
