"""The evaluation of one model: metrics from batched scoring against a brute-force recomputation,
the files it writes, and the evaluate script end to end through its command line."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from semtail import evaluate as ev

ROOT = Path(__file__).resolve().parents[1]
EMPTY = -1


def tiny_split(n_train=60, n_test=230, n_items=25, seed=0):
    """A random binary split; user 0 has everything in fold-in, user 1 holds nothing out."""
    rng = np.random.default_rng(seed)
    item_bias = np.linspace(0.05, 0.5, n_items)
    train = (rng.random((n_train, n_items)) < item_bias).astype(np.float32)
    interacted = rng.random((n_test, n_items)) < item_bias
    heldout_part = rng.random((n_test, n_items)) < 0.3
    fold_in = (interacted & ~heldout_part).astype(np.float32)
    heldout = (interacted & heldout_part).astype(np.float32)
    fold_in[0], heldout[0] = 1, 0
    heldout[1] = 0
    return train, fold_in, heldout


def as_split(train, fold_in, heldout):
    return ev.Split(sp.csr_matrix(train), sp.csr_matrix(fold_in), sp.csr_matrix(heldout))


def linear_scorer(weights: np.ndarray):
    U = torch.tensor(weights, dtype=torch.float32)
    return lambda fold_in: fold_in @ U.to(fold_in.device)


def brute_lists(scores, exclude, k):
    lists = []
    for u in range(scores.shape[0]):
        candidates = [i for i in range(scores.shape[1]) if not exclude[u, i]]
        ranked = sorted(candidates, key=lambda i: (-scores[u, i], i))[:k]
        lists.append(ranked + [EMPTY] * (k - len(ranked)))
    return lists


def brute_gini(exposure):
    n, total = len(exposure), sum(exposure)
    return sum(abs(a - b) for a in exposure for b in exposure) / (2 * n * total)


def brute_metrics(train, fold_in, heldout, scores, ks, block_size, tail_share):
    """Every metric of docs/metrics.md with loops over users and items, float64 throughout."""
    n_users, n_items = fold_in.shape
    length = max(ks)
    masked = brute_lists(scores, fold_in > 0, length)
    unmasked = brute_lists(scores, np.zeros_like(fold_in, dtype=bool), length)
    popularity = train.sum(axis=0)
    order_total = popularity.sum()
    tail = [sum(p for p in popularity if p <= popularity[i]) <= tail_share * order_total for i in range(n_items)]
    held = [set(np.flatnonzero(heldout[u])) for u in range(n_users)]
    scored = [u for u in range(n_users) if held[u]]
    out = {}
    for k in ks:
        ndcg, recall, hit = [], [], []
        for u in scored:
            top = masked[u][:k]
            dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in held[u])
            ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(held[u]))))
            ndcg.append(dcg / ideal)
            recall.append(sum(i in held[u] for i in top) / min(k, len(held[u])))
            hit.append(float(any(i in held[u] for i in top)))
        out[f"ndcg@{k}"], out[f"recall@{k}"], out[f"hit_rate@{k}"] = np.mean(ndcg), np.mean(recall), np.mean(hit)
        for name, lists in (("coverage", masked), ("coverage_unmasked", unmasked)):
            blocks = [
                set().union(*[set(lists[u][:k]) - {EMPTY} for u in range(b, b + block_size)])
                for b in range(0, n_users - block_size + 1, block_size)
            ]
            out[f"{name}@{k}"] = np.mean([len(b) for b in blocks])
        per_item = []
        for i in range(n_items):
            holders = [u for u in range(n_users) if i in held[u]]
            per_item.append(sum(i in masked[u][:k] for u in holders) / len(holders) if holders else None)
        out[f"item_recall@{k}"] = np.mean([p or 0.0 for p in per_item])
        out[f"item_recall@{k}_pos"] = np.mean([p for p in per_item if p is not None])
        exposure = [sum(i in masked[u][:k] for u in range(n_users)) for i in range(n_items)]
        out[f"gini@{k}"] = brute_gini(exposure)
        filled = [[i for i in masked[u][:k] if i != EMPTY] for u in range(n_users)]
        out[f"arp@{k}"] = np.mean([np.mean([popularity[i] for i in filled[u]]) for u in scored])
        slots = [i for f in filled for i in f]
        out[f"tail_share@{k}"] = sum(tail[i] for i in slots) / len(slots)
    return out, masked, unmasked


def test_evaluate_matches_brute_force_with_ties_batches_and_excluded_users():
    train, fold_in, heldout = tiny_split()
    rng = np.random.default_rng(3)
    weights = rng.integers(0, 3, size=(25, 25)).astype(np.float32)  # integer scores: many ties
    ks = [3, 10]
    result = ev.evaluate(
        linear_scorer(weights),
        as_split(train, fold_in, heldout),
        ks=ks,
        coverage_block_size=50,
        tail_interaction_share=0.2,
        batch_size=64,
    )
    all_ks = [3, 10, 100]  # 100 always joins, for NDCG@100
    expected, masked, unmasked = brute_metrics(train, fold_in, heldout, fold_in @ weights, all_ks, 50, 0.2)
    assert set(result.metrics) == set(expected)
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert result.n_test_users == 230 and result.n_items == 25
    assert result.n_excluded_users == int((heldout.sum(axis=1) == 0).sum()) >= 2
    assert result.lists["top_k"].tolist() == masked
    assert result.lists["top_k_unmasked"].tolist() == unmasked
    assert result.lists["top_k"][0].tolist() == [EMPTY] * 100  # everything in fold-in
    np.testing.assert_array_equal(result.item_stats["heldout_count"], heldout.sum(axis=0))
    np.testing.assert_array_equal(result.item_stats["train_popularity"], train.sum(axis=0))
    tail = result.item_stats["is_long_tail"]
    assert result.long_tail["n_items"] == tail.sum()
    assert result.long_tail["interaction_share_held"] <= 0.2


def test_arp_leaves_out_users_without_held_out_items_but_list_statistics_keep_them():
    # popularity 50 for item 0, 1 for items 1..5; the long tail (at most 0.2 of 55 interactions) is items 1..5
    train = np.zeros((50, 6), dtype=np.float32)
    train[:, 0] = 1
    train[np.arange(1, 6), np.arange(1, 6)] = 1
    fold_in = np.zeros((4, 6), dtype=np.float32)
    heldout = np.zeros((4, 6), dtype=np.float32)
    fold_in[0, 1] = 1  # user 0 holds nothing out; MostPop gives it item 0 first
    for user, fold, held in ((1, [0], 2), (2, [0, 3], 1), (3, [0], 5)):
        fold_in[user, fold], heldout[user, held] = 1, 1
    popularity = torch.tensor(train.sum(axis=0))
    result = ev.evaluate(
        lambda x: popularity.expand(x.shape[0], -1).clone(),
        as_split(train, fold_in, heldout),
        ks=[1],
        coverage_block_size=2,
        tail_interaction_share=0.2,
        batch_size=3,
    )
    lists = brute_lists(train.sum(axis=0) * np.ones((4, 1)), fold_in > 0, 100)
    assert [row[:1] for row in lists] == [[0], [1], [1], [1]]
    assert result.lists["top_k"].tolist() == lists
    assert result.n_excluded_users == 1
    # users 1..3 only get items of popularity 1; all four users would give (50 + 1 + 1 + 1) / 4 at k = 1
    assert result.metrics["arp@1"] == 1.0
    assert result.metrics["arp@100"] == 1.0
    assert result.metrics["tail_share@1"] == 0.75  # user 0's item 0 is not in the tail
    assert result.metrics["gini@1"] == pytest.approx(brute_gini([1, 3, 0, 0, 0, 0]))
    assert result.metrics["coverage@1"] == 1.5  # blocks {0, 1} and {1}


def test_batch_size_does_not_change_anything():
    split = as_split(*tiny_split(seed=1))
    weights = np.random.default_rng(0).random((25, 25)).astype(np.float32)
    runs = [
        ev.evaluate(
            linear_scorer(weights), split, ks=[5], coverage_block_size=100, tail_interaction_share=0.2, batch_size=b
        )
        for b in (7, 1000)
    ]
    assert runs[0].metrics == runs[1].metrics
    np.testing.assert_array_equal(runs[0].lists["top_k"], runs[1].lists["top_k"])


def test_bad_inputs_are_named():
    split = as_split(*tiny_split())
    with pytest.raises(ValueError, match="coverage_block_size is 500"):
        ev.evaluate(
            linear_scorer(np.eye(25)), split, ks=[5], coverage_block_size=500, tail_interaction_share=0.2, batch_size=64
        )
    with pytest.raises(ValueError, match="NaN"):
        ev.evaluate(
            lambda x: x * float("nan"), split, ks=[5], coverage_block_size=50, tail_interaction_share=0.2, batch_size=64
        )
    with pytest.raises(ValueError, match="shape"):
        ev.evaluate(
            lambda x: x[:, :3], split, ks=[5], coverage_block_size=50, tail_interaction_share=0.2, batch_size=64
        )


def write_split(folder: Path, train, fold_in, heldout):
    folder.mkdir(parents=True, exist_ok=True)
    for name, matrix in (("train", train), ("test_tr", fold_in), ("test_te", heldout)):
        sp.save_npz(folder / f"{name}.npz", sp.csr_matrix(matrix))
    return folder


def test_load_split_rejects_mismatched_and_overlapping_files(tmp_path):
    train, fold_in, heldout = tiny_split()
    folder = write_split(tmp_path / "ok", train, fold_in, heldout)
    split = ev.load_split(folder / "train.npz", folder / "test_tr.npz", folder / "test_te.npz")
    assert split.n_items == 25 and split.n_test_users == 230
    bad = write_split(tmp_path / "overlap", train, fold_in, np.maximum(heldout, fold_in))
    with pytest.raises(ValueError, match="share .* pairs"):
        ev.load_split(bad / "train.npz", bad / "test_tr.npz", bad / "test_te.npz")
    counts = write_split(tmp_path / "counts", train * 2, fold_in, heldout)
    with pytest.raises(ValueError, match=r"train\.npz: expected a binary"):
        ev.load_split(counts / "train.npz", counts / "test_tr.npz", counts / "test_te.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ev.load_split(tmp_path / "missing.npz", folder / "test_tr.npz", folder / "test_te.npz")


def hand_made_model(path: Path, weights: np.ndarray, method="ease_closed", seed=0):
    """A model file as the methods' contract describes it (semtail.modelfile)."""
    model = {
        "format_version": 3,
        "dataset": "tiny",
        "method": method,
        "variant": method,
        "seed": seed,
        "hyperparameters": {"lr": 0.1, "lam": 1.0},
        "n_items": weights.shape[0],
        "n_train_users": 60,
        "state": {"B": torch.tensor(weights, dtype=torch.float32)},
        "item_weights": None,
        "history": [],
        "best_epoch": 3,
        "code_version": "abc",
        "environment": {"device": "cpu"},
        "train_seconds": 1.5,
        "base": None,
    }
    torch.save(model, path)
    return model


def run_evaluate_script(
    model: Path, split_folder: Path, out: Path, work: Path, user_ids=None
) -> subprocess.CompletedProcess:
    """workflow_scripts/evaluate.py run by hand, with work/params.yaml, logging to work/evaluate.log;
    the test users' raw ids (`user_ids`, default their row numbers) in split_folder/test_users.txt."""
    n_users = sp.load_npz(split_folder / "test_tr.npz").shape[0]
    ids = user_ids if user_ids is not None else [str(u) for u in range(n_users)]
    (split_folder / "test_users.txt").write_text("\n".join(ids) + "\n")
    command = [
        sys.executable,
        str(ROOT / "workflow_scripts/evaluate.py"),
        "--input",
        f"model={model}",
        *[
            arg
            for name in ("train", "test_tr", "test_te")
            for arg in ("--input", f"{name}={split_folder / (name + '.npz')}")
        ],
        "--input",
        f"test_users={split_folder / 'test_users.txt'}",
        "--output",
        f"metrics={out / 'metrics.json'}",
        "--output",
        f"topk={out / 'topk.npz'}",
        "--output",
        f"item_stats={out / 'items.npz'}",
        "--output",
        f"per_user={out / 'per_user.csv'}",
        "--params",
        str(work / "params.yaml"),
        "--resource",
        "gpu=0",
        "--log",
        str(work / "evaluate.log"),
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_evaluate_script_end_to_end(tmp_path):
    train, fold_in, heldout = tiny_split()
    folder = write_split(tmp_path / "data", train, fold_in, heldout)
    # integer weights: exact scores in any summation order, and ties for the tie-breaking rule
    weights = np.random.default_rng(5).integers(0, 5, size=(25, 25)).astype(np.float32)
    hand_made_model(tmp_path / "model.pt", weights)
    (tmp_path / "params.yaml").write_text(
        "evaluation: {ks: [5, 10], coverage_block_size: 100, tail_interaction_share: 0.2, batch_size: 50}\n"
        "device: cpu\nhyperparameters: {lr: 0.1, lam: 1.0}\nmodel_code_version: abc\n"
    )
    out = tmp_path / "results"
    user_ids = [str(1000 + 7 * u) for u in range(230)]  # raw ids, not row numbers
    completed = run_evaluate_script(tmp_path / "model.pt", folder, out, tmp_path, user_ids)
    assert completed.returncode == 0, completed.stderr
    record = json.loads((out / "metrics.json").read_text())
    assert (record["dataset"], record["method"], record["variant"], record["seed"]) == (
        "tiny",
        "ease_closed",
        "ease_closed",
        0,
    )
    assert record["format_version"] == 4  # version 1 had no variant, 2 no split, 3 no model history
    assert record["model"]["history"] == [] and record["model"]["best_epoch"] == 3
    assert record["split"] == {
        name: hashlib.sha256((folder / f"{name}.npz").read_bytes()).hexdigest()
        for name in ("test_te", "test_tr", "train")
    }
    assert record["hyperparameters"] == {"lr": 0.1, "lam": 1.0}
    assert record["n_test_users"] == 230 and record["n_items"] == 25
    assert record["n_excluded_users"] == int((heldout.sum(axis=1) == 0).sum())
    assert record["device"] == "cpu"
    assert len(record["model"]["sha256"]) == 64 and record["code_version"]
    assert "users" in record["definitions"] and "tail_share@k" in record["definitions"]

    expected, masked, unmasked = brute_metrics(train, fold_in, heldout, fold_in @ weights, [5, 10, 100], 100, 0.2)
    assert set(record["metrics"]) == set(expected)
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

    with np.load(out / "topk.npz") as lists:
        assert lists["top_k"].tolist() == masked and lists["top_k_unmasked"].tolist() == unmasked
        np.testing.assert_array_equal(lists["n_heldout"], heldout.sum(axis=1))
    with np.load(out / "items.npz") as items:
        assert items["ks"].tolist() == [5, 10, 100] and "item_weights" not in items  # ease_closed learns none
        for k in (5, 10, 100):
            exposure = [sum(i in masked[u][:k] for u in range(230)) for i in range(25)]
            np.testing.assert_array_equal(items[f"exposure_at_{k}"], exposure)
        hits = [sum(i in masked[u][:10] and heldout[u, i] > 0 for u in range(230)) for i in range(25)]
        np.testing.assert_array_equal(items["hits_at_10"], hits)

    per_user = pd.read_csv(out / "per_user.csv", dtype={"user": str})
    user_metrics = [f"{name}@{k}" for name in ("ndcg", "recall", "hit_rate", "arp") for k in (5, 10, 100)]
    assert list(per_user.columns) == ["user", "n_heldout", *user_metrics]
    assert per_user["user"].tolist() == user_ids
    np.testing.assert_array_equal(per_user["n_heldout"], heldout.sum(axis=1))
    excluded = heldout.sum(axis=1) == 0
    assert per_user.loc[excluded, user_metrics].isna().all().all()
    assert per_user.loc[~excluded, user_metrics].notna().all().all()
    for key in user_metrics:  # the column means are the metric JSON's values
        assert per_user[key].mean() == pytest.approx(record["metrics"][key], rel=1e-12), key
    for u in np.flatnonzero(~excluded)[:40]:  # and each user's values are that user's, by brute force
        held = set(np.flatnonzero(heldout[u]))
        top = masked[u][:10]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in held)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(held))))
        assert per_user.loc[u, "ndcg@10"] == pytest.approx(dcg / ideal, rel=1e-6)
        assert per_user.loc[u, "recall@10"] == pytest.approx(sum(i in held for i in top) / min(10, len(held)), rel=1e-6)
    assert not list(out.glob(".*partial*"))


def test_evaluation_refuses_a_model_trained_with_other_settings_than_the_run_has_now(tmp_path):
    """The rule passes what the train job must have used now (its hyperparameters, the method's
    code version); a model file left from other settings is refused, naming what differs."""
    train, fold_in, heldout = tiny_split()
    folder = write_split(tmp_path / "data", train, fold_in, heldout)
    hand_made_model(tmp_path / "model.pt", np.eye(25, dtype=np.float32))
    (tmp_path / "params.yaml").write_text(
        "evaluation: {ks: [5, 10], coverage_block_size: 100, tail_interaction_share: 0.2, batch_size: 50}\n"
        "device: cpu\nhyperparameters: {lr: 1000000.0, lam: 1.0}\nmodel_code_version: abd\n"
    )
    completed = run_evaluate_script(tmp_path / "model.pt", folder, tmp_path / "results", tmp_path)
    assert completed.returncode != 0
    assert (
        f"{tmp_path / 'model.pt'} was not trained with the current settings: hyperparameters.lr is 0.1 there, "
        f"1000000.0 now; code_version is 'abc' there, 'abd' now. Retrain it: snakemake --cores all --forcerun "
        f"{tmp_path / 'model.pt'}"
    ) in (tmp_path / "evaluate.log").read_text()
    assert not (tmp_path / "results").exists()


def test_ks_beyond_the_catalog_fail_the_job_at_its_start(tmp_path):
    """Checked before the model is even read: here there is no model file at all."""
    train, fold_in, heldout = tiny_split()
    folder = write_split(tmp_path / "data", train, fold_in, heldout)
    (tmp_path / "params.yaml").write_text(
        "evaluation: {ks: [5, 30, 40], coverage_block_size: 100, tail_interaction_share: 0.2, batch_size: 50}\ndevice: cpu\n"
    )
    completed = run_evaluate_script(tmp_path / "no-model.pt", folder, tmp_path, tmp_path)
    assert completed.returncode != 0
    message = (
        "evaluation.ks: [30, 40] are larger than the 25 items of the dataset (its preprocessed split): lists cannot "
        "hold more items than the catalog; give ks of at most 25"
    )
    assert message in (tmp_path / "evaluate.log").read_text()
    assert not (tmp_path / "metrics.json").exists()
    with pytest.raises(ValueError, match=r"evaluation.ks: \[26\] is larger than the 25 items of ml-tiny"):
        ev.evaluate_model_file(
            tmp_path / "no-model.pt", as_split(train, fold_in, heldout), {"ks": [25, 26]}, "cpu", {"dataset": "ml-tiny"}
        )


def test_per_user_file_needs_one_id_per_test_user(tmp_path):
    (tmp_path / "test_users.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"test_users\.txt: 2 user ids, but the split has 3 users"):
        ev.read_user_ids(tmp_path / "test_users.txt", 3)


def test_a_posit_runs_evaluation_keeps_its_item_weights_and_history(tmp_path):
    """The adversary's figures read items.npz and metrics.json, never the model file (which
    `model_files: temporary` deletes once evaluated): what they read must be the model's own."""
    train, fold_in, heldout = tiny_split()
    folder = write_split(tmp_path / "data", train, fold_in, heldout)
    weights = np.random.default_rng(6).random(25).astype(np.float32) + 0.5
    history = [
        {"epoch": 1, "loss": 2.5, "weight_share_least_popular_half": 0.41, "weight_change": 0.3},
        {"epoch": 2, "loss": 2.25, "weight_share_least_popular_half": 0.44, "weight_change": 0.05},
    ]
    torch.save(
        {
            "format_version": 3,
            "dataset": "tiny",
            "method": "posit",
            "variant": "posit",
            "seed": 1,
            "hyperparameters": {},
            "n_items": 25,
            "n_train_users": 60,
            "state": {"U": torch.zeros(25, 25)},
            "item_weights": torch.tensor(weights),
            "history": history,
            "best_epoch": 2,
            "code_version": "x",
            "environment": {"device": "cpu"},
            "train_seconds": 1.0,
            "base": None,
        },
        tmp_path / "posit.pt",
    )
    split = ev.load_split(folder / "train.npz", folder / "test_tr.npz", folder / "test_te.npz")
    settings = {"ks": [5], "coverage_block_size": 100, "tail_interaction_share": 0.2, "batch_size": 50}
    record, result = ev.evaluate_model_file(tmp_path / "posit.pt", split, settings, torch.device("cpu"))
    out = tmp_path / "out"
    out.mkdir()
    ev.write_outputs(record, result, out / "metrics.json", out / "topk.npz", out / "items.npz")
    written = json.loads((out / "metrics.json").read_text())
    assert written["model"]["history"] == history and written["model"]["best_epoch"] == 2
    with np.load(out / "items.npz") as items:
        np.testing.assert_array_equal(items["item_weights"], weights.astype(np.float64))
