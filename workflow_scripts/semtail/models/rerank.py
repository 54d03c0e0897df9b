"""Popularity re-ranking of a trained base model's scores (by default the SGD `ease`).

For each user, items are ordered in three groups:

1. score > high:          kept on top, by descending score;
2. low < score <= high:   by ascending training popularity (least popular first);
3. score <= low:          the rest, by descending score.

Ties go to the lower item index. The authors' code ordered group 2 by the item ids of the
popularity-sorted list (the argsort) instead of each item's popularity rank; this module uses the
items' popularity itself.
"""

from __future__ import annotations

import torch

from semtail.models import STATE_KEYS, Fitted, Run, TrainingData
from semtail.models.itemitem import predict

TOP, MIDDLE, REST = 2, 1, 0


def ranking_key(scores: torch.Tensor, popularity: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """A key per (user, item) whose descending order, ties to the lower item index, is the
    re-ranked order: n_items for the first item, down to 1 for the last. Exact in float32 for
    fewer than 2**24 items."""
    n_users, n_items = scores.shape
    group = torch.where(scores > high, TOP, torch.where(scores > low, MIDDLE, REST))
    within_group = torch.where(group == MIDDLE, -popularity.to(scores.dtype).expand_as(scores), scores)
    # Two stable sorts: by the key within a group, then by group; equal keys keep index order.
    order = within_group.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, group.gather(1, order).argsort(dim=1, descending=True, stable=True))
    positions = torch.arange(n_items, 0, -1, device=scores.device, dtype=torch.float32)
    return torch.empty(n_users, n_items, device=scores.device).scatter_(1, order, positions.expand(n_users, -1))


def check_thresholds(hyperparameters: dict) -> tuple[float, float]:
    high, low = float(hyperparameters["high"]), float(hyperparameters["low"])
    if not high > low:
        raise ValueError(f"hyperparameters.rerank: high ({high}) must be greater than low ({low})")
    return high, low


def fit(data: TrainingData, hyperparameters: dict, run: Run) -> Fitted:
    check_thresholds(hyperparameters)
    base = data.base_model
    if base is None:
        raise ValueError("rerank needs the model file of its base method (input base_model)")
    expected = (run.dataset, hyperparameters["base"], run.seed, data.n_items)
    found = (base["dataset"], base["variant"], base["seed"], base["n_items"])
    if found != expected:
        raise ValueError(
            f"rerank of {run.describe()}: the base model is (dataset, variant, seed, items) = {found}, "
            f"expected {expected}"
        )
    (matrix_key,) = STATE_KEYS[base["method"]]
    popularity = torch.from_numpy(data.popularity()).float()
    return Fitted(state={"base": base["state"][matrix_key], "popularity": popularity})


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    high, low = check_thresholds(hyperparameters)
    base = state["base"].to(device=device, dtype=torch.float32)
    popularity = state["popularity"].to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return ranking_key(predict(fold_in.to(device=device, dtype=torch.float32), base), popularity, high, low)

    return score
