"""Rerank: the order on hand-built cases, by popularity rank (not by item id as the original code)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from method_settings import completed
from semtail.metrics import rank_top_k
from semtail.models import rerank
from semtail.models.base import TrainingData, TrainingRun
from semtail.plan import ConfigError, check_config

SCORES = torch.tensor([[0.9, 0.3, 0.05, 0.6, 0.2, 0.3]])
POPULARITY = torch.tensor([50.0, 40.0, 5.0, 30.0, 10.0, 20.0])


def order(key: torch.Tensor) -> list[int]:
    return rank_top_k(key, key.shape[1])[0].tolist()


def test_rerank_order_by_hand():
    # top (> 0.5): items 0, 3 by score; middle (0.1, 0.5]: items 4 (pop 10), 5 (20), 1 (40); rest: item 2
    key = rerank.ranking_key(SCORES, POPULARITY, high=0.5, low=0.1)
    assert order(key) == [0, 3, 4, 5, 1, 2]
    assert sorted(key[0].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_rerank_is_not_the_item_id_order_of_the_original_code():
    # The original ranked the middle group by 1 − argsort(popularity)[i] / max: the position of
    # item i in the *sorted list of ids*, which here puts item 5 before item 4.
    sorted_ids = torch.argsort(POPULARITY)
    buggy = 1 - sorted_ids / sorted_ids.max()
    middle = [1, 4, 5]
    buggy_middle = sorted(middle, key=lambda i: -buggy[i].item())
    assert buggy_middle == [5, 4, 1]
    assert order(rerank.ranking_key(SCORES, POPULARITY, 0.5, 0.1))[2:5] == [4, 5, 1] != buggy_middle


def test_ties_go_to_the_lower_item_index():
    scores = torch.tensor([[0.7, 0.3, 0.7, 0.3, 0.0, 0.0]])
    popularity = torch.tensor([1.0, 9.0, 1.0, 9.0, 1.0, 1.0])
    assert order(rerank.ranking_key(scores, popularity, 0.5, 0.1)) == [0, 2, 1, 3, 4, 5]


def brute_force_order(scores: list[float], popularity: list[float], high: float, low: float) -> list[int]:
    def sort_key(i):
        s = scores[i]
        if s > high:
            return (0, -s, i)
        if s > low:
            return (1, popularity[i], i)
        return (2, -s, i)

    return sorted(range(len(scores)), key=sort_key)


def test_rerank_matches_a_brute_force_sort():
    generator = torch.Generator().manual_seed(0)
    scores = torch.round(torch.rand(50, 40, generator=generator) * 20) / 20  # many ties
    popularity = torch.randint(0, 8, (40,), generator=generator).float()
    key = rerank.ranking_key(scores, popularity, 0.7, 0.25)
    got = rank_top_k(key, 40)
    for user in range(50):
        expected = brute_force_order(scores[user].tolist(), popularity.tolist(), 0.7, 0.25)
        assert got[user].tolist() == expected


def base_model(method="ease", seed=0, n_items=3):
    return {
        "dataset": "toy",
        "method": method,
        "variant": method,
        "seed": seed,
        "n_items": n_items,
        "state": {"U": torch.eye(n_items)},
    }


def test_fit_wraps_the_base_model_and_training_popularity():
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=np.float32))
    data = TrainingData(train, train, train, base_model=base_model())
    fitted = rerank.fit(
        data, completed("rerank", {"base": "ease", "high": 0.5, "low": 0.1}), TrainingRun("toy", "rerank", 0)
    )
    assert fitted.state["popularity"].tolist() == [3.0, 1.0, 1.0]
    assert torch.equal(fitted.state["base"], torch.eye(3))


@pytest.mark.parametrize(
    "base, hyperparameters, message",
    [
        (base_model(seed=1), {"base": "ease", "high": 0.5, "low": 0.1}, "seed"),
        (base_model(method="ease_closed"), {"base": "ease", "high": 0.5, "low": 0.1}, "base model"),
        (
            base_model(),
            {"base": "ease", "high": 0.1, "low": 0.5},
            r"hyperparameters.rerank: high \(0.1\) must be greater than low \(0.5\)",
        ),
    ],
)
def test_a_job_refuses_a_mismatched_base_or_thresholds(base, hyperparameters, message):
    """The thresholds by the declaration's constraint, before fit; the base by fit."""
    train = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        rerank.fit(
            TrainingData(train, train, train, base_model=base),
            completed("rerank", hyperparameters),
            TrainingRun("toy", "rerank", 0),
        )


def test_config_check_rejects_thresholds_out_of_order_for_any_dataset():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper.yaml").read_text())
    check_config(config)
    broken = copy.deepcopy(config)
    broken["overrides"]["msd"]["rerank"] = {"low": 0.5}
    with pytest.raises(ConfigError, match=r"rerank for msd: high \(0.2\) must be greater than low \(0.5\)"):
        check_config(broken)
