"""summary.md's flag of an on-base method whose lists equal its base's (semtail/flags.py), on lists
that the real rerank scorer ranks, and rerank's per-user quantile thresholds against numpy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from method_settings import completed
from semtail import flags, tables
from semtail.metrics import rank_top_k
from semtail.models import rerank

N_USERS, N_ITEMS, K = 25, 15, 6


def write_run(folder, variant, method, seed, top_k, hyperparameters):
    run = folder / variant / f"seed{seed}"
    run.mkdir(parents=True)
    record = {
        "dataset": "toy",
        "method": method,
        "variant": variant,
        "seed": seed,
        "metrics": {"ndcg@100": 0.1},
        "hyperparameters": hyperparameters,
    }
    (run / "metrics.json").write_text(json.dumps(record))
    np.savez(run / "topk.npz", top_k=top_k.numpy().astype(np.int32))
    return run / "metrics.json", run / "topk.npz"


def test_a_rerank_that_changes_nothing_is_flagged_and_one_that_does_is_not(tmp_path):
    generator = torch.Generator().manual_seed(0)
    fold_in = (torch.rand(N_USERS, N_ITEMS, generator=generator) < 0.3).float()
    popularity = fold_in.sum(dim=0)
    paths = []

    def add(variant, method, seed, top_k, hyperparameters):
        paths.append(write_run(tmp_path, variant, method, seed, top_k, hyperparameters))

    def reranked(matrix, high, low):
        hyperparameters = completed("rerank", {"base": "ease", "high": high, "low": low})
        score = rerank.scorer({"base": matrix, "popularity": popularity}, hyperparameters, torch.device("cpu"))
        return rank_top_k(score(fold_in), K, exclude=fold_in), hyperparameters

    for seed in (0, 1):
        matrix = torch.rand(N_ITEMS, N_ITEMS, generator=generator).fill_diagonal_(0)
        scores = fold_in @ matrix  # every score in [0, N_ITEMS)
        base = rank_top_k(scores, K, exclude=fold_in)
        add("ease", "ease", seed, base, {})
        # Thresholds above every score: every item in the last group, ranked by score, as the base.
        unchanged, settings = reranked(matrix, float(N_ITEMS + 1), float(N_ITEMS))
        assert torch.equal(unchanged, base)
        add("rerank", "rerank", seed, unchanged, settings)
        # Thresholds inside the scores' range: the middle group is reordered by popularity.
        low, high = torch.quantile(scores, 0.5).item(), torch.quantile(scores, 0.9).item()
        changed, settings = reranked(matrix, high, low)
        assert not torch.equal(changed, base)
        add("rerank_mid", "rerank", seed, changed, settings)
        # The same in one seed only: not flagged.
        add("rerank_once", "rerank", seed, unchanged if seed == 0 else changed, settings)

    metric_paths, topk_paths = zip(*paths)
    unchanged = flags.unchanged_on_base(metric_paths, topk_paths)
    assert unchanged.to_dict("records") == [{"method": "rerank", "base": "ease", "seed_pairs": 2, "n_users": N_USERS}]
    summary = pd.DataFrame(
        [
            {"dataset": "toy", "method": m, "n_seeds": 2, "seeds": "0 1", "ndcg@100_mean": 0.1, "ndcg@100_std": 0.0}
            for m in ("ease", "rerank", "rerank_mid", "rerank_once")
        ]
    )
    markdown = tables.summary_markdown(summary, "toy", unchanged=unchanged)
    assert (
        "## Flags\n\n- **rerank changed nothing**: its top-k test lists equal those of its base ease for every test user, in each of the 2 seeds"
        in markdown
    )
    assert "rerank_mid changed" not in markdown and "rerank_once changed" not in markdown
    assert "## Flags" not in tables.summary_markdown(summary, "toy", unchanged=unchanged.iloc[:0])

    # Its seeds spread (as ease's do) but it is ease: not flagged again as seeds that disagree,
    # unless compared with another reference.
    runs = pd.DataFrame(
        {
            "dataset": "toy",
            "method": ["ease", "ease", "rerank", "rerank", "other", "other"],
            "seed": [0, 1] * 3,
            "ndcg@100": [0.40, 0.42, 0.40, 0.42, 0.41, 0.41],
        }
    )
    assert flags.seed_disagreements(runs, "ease")["method"].tolist() == ["rerank"]
    assert flags.seed_disagreements(runs, "ease", unchanged).empty
    assert flags.seed_disagreements(runs, "other", unchanged)["method"].tolist() == ["ease", "rerank"]

    with pytest.raises(ValueError, match="is not beside"):
        flags.unchanged_on_base(metric_paths[:1], topk_paths[1:2])


def test_quantile_thresholds_are_each_users_quantiles_of_its_scores():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(30, 41, generator=generator)  # distinct scores
    popularity = torch.randint(0, 9, (41,), generator=generator).float()
    for level in (0.0, 0.37, 0.9, 0.95, 1.0):
        expected = np.quantile(scores.double().numpy(), level, axis=1)  # linear interpolation
        np.testing.assert_allclose(rerank.user_quantiles(scores, level).squeeze(1).numpy(), expected, rtol=1e-6)
    hyperparameters = completed("rerank", {"base": "ease", "high": 0.9, "low": 0.6, "thresholds": "quantile"})
    matrix = torch.eye(41)
    key = rerank.scorer({"base": matrix, "popularity": popularity}, hyperparameters, torch.device("cpu"))(scores)
    got = rank_top_k(key, 41)
    for user in range(30):
        row = scores[user].double().numpy()
        high, low = np.quantile(row, 0.9), np.quantile(row, 0.6)
        top = sorted((i for i in range(41) if row[i] > high), key=lambda i: (-row[i], i))
        middle = sorted((i for i in range(41) if low < row[i] <= high), key=lambda i: (popularity[i].item(), i))
        rest = sorted((i for i in range(41) if row[i] <= low), key=lambda i: (-row[i], i))
        assert len(top) == 4 and len(middle) == 12  # 10% and 30% of 40 gaps above the interpolated cuts
        assert got[user].tolist() == top + middle + rest


def test_quantile_levels_outside_0_1_are_refused():
    hyperparameters = completed("rerank", {"base": "ease", "high": 2.0, "low": 0.5, "thresholds": "quantile"})
    with pytest.raises(ValueError, match=r"rerank.high \(2.0\) must be in \[0, 1\] with thresholds: quantile"):
        rerank.scorer({"base": torch.eye(3), "popularity": torch.ones(3)}, hyperparameters, torch.device("cpu"))
    # The default, the authors' absolute scores, takes any numbers.
    assert completed("rerank", {"base": "ease", "high": 2.0, "low": 0.5})["thresholds"] == "score"
