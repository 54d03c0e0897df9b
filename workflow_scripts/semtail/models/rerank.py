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

from semtail.models.base import Fitted, Run, TrainingData
from semtail.models.itemitem import predict
from semtail.models.on_base import base_with_popularity

DECLARATION = {
    "training": "on_base",
    "hyperparameters": {
        "high": {"type": "number", "description": "items scoring above this stay on top, by score"},
        "low": {"type": "number", "description": "items scoring in (low, high] follow, least popular first; the rest after them, by score"},
    },
    "constraints": [["high", ">", "low"]],
    "state": {"base": ["items", "items"], "popularity": ["items"]},
    "seed_dependent": False,  # adds nothing random: seed-independent exactly when its base is
    # The base model's matrix, read (and its checksum taken) when training and when scoring.
    "resources": {"gpu": False, "memory": {"dense": 1, "sparse": 2}, "runtime": {"dense_file_passes": 2}},
    "figures": {"label": "Rerank", "colour": "#de8f05", "marker": "^"},
}  # fmt: skip

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


def fit(data: TrainingData, hyperparameters: dict, run: Run) -> Fitted:
    return base_with_popularity(data, hyperparameters, run)


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    high, low = float(hyperparameters["high"]), float(hyperparameters["low"])
    base = state["base"].to(device=device, dtype=torch.float32)
    popularity = state["popularity"].to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return ranking_key(predict(fold_in.to(device=device, dtype=torch.float32), base), popularity, high, low)

    return score
