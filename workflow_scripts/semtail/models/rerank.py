"""Popularity re-ranking of a trained base model's scores (by default the SGD `ease`).

For each user, items are ordered in three groups, by thresholds t_high > t_low:

1. score > t_high:           kept on top, by descending score;
2. t_low < score <= t_high:  by ascending training popularity (least popular first);
3. score <= t_low:           the rest, by descending score.

`thresholds` says what `high` and `low` are. `score` (the default, the authors' rule): the scores
themselves, t_high = high, t_low = low, the same for every user; they depend on the scale of the
base's scores, so values set for one dataset may fall outside another's scores. `quantile`: levels
in [0, 1] of each user's scores over every catalog item, t = that user's quantile at level high
(low) with linear interpolation between the sorted scores (numpy.quantile's default): with high
0.99 about the top 1% of the catalog stays on top for each user, on any dataset.

Ties go to the lower item index. The authors' code ordered group 2 by the item ids of the
popularity-sorted list (the argsort) instead of each item's popularity rank; this module uses the
items' popularity itself.
"""

from __future__ import annotations

import math

import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import predict
from semtail.models.on_base import base_with_popularity

DECLARATION = {
    "training": "on_base",
    "hyperparameters": {
        "high": {"type": "number", "description": "items scoring above this stay on top, by score"},
        "low": {
            "type": "number",
            "description": "items scoring in (low, high] follow, least popular first; the rest after them, by score",
        },
        "thresholds": {
            "type": "string",
            "enum": ["score", "quantile"],
            "default": "score",
            "description": "what high and low are. score: scores of the base (the authors' rule; their scale depends on the dataset). quantile: levels in [0, 1] of each user's scores over the catalog, which carry over between datasets",
        },
    },
    "constraints": [["high", ">", "low"]],
    "state": {"base": ["items", "items"], "popularity": ["items"]},
    "seed_dependent": False,  # adds nothing random: seed-independent exactly when its base is
    # The base model's matrix, read (and its checksum taken) when training and when scoring.
    "resources": {
        "gpu": False,
        "memory": {"dense": 1, "sparse": 2},
        "runtime": {"dense_file_passes": 2},
        "evaluation": {"batch_entry_bytes": 36, "batch_sorts": 2},
    },
    "figures": {"label": "Rerank", "colour": "#de8f05", "marker": "^"},
}

TOP, MIDDLE, REST = 2, 1, 0


def ranking_key(scores: torch.Tensor, popularity: torch.Tensor, high, low) -> torch.Tensor:
    """A key per (user, item) whose descending order, ties to the lower item index, is the
    re-ranked order: n_items for the first item, down to 1 for the last. Exact in float32 for
    fewer than 2**24 items. high, low: score thresholds, numbers or one per user (n_users × 1)."""
    n_users, n_items = scores.shape
    group = torch.where(scores > high, TOP, torch.where(scores > low, MIDDLE, REST))
    within_group = torch.where(group == MIDDLE, -popularity.to(scores.dtype).expand_as(scores), scores)
    # Two stable sorts: by the key within a group, then by group; equal keys keep index order.
    order = within_group.argsort(dim=1, descending=True, stable=True)
    order = order.gather(1, group.gather(1, order).argsort(dim=1, descending=True, stable=True))
    positions = torch.arange(n_items, 0, -1, device=scores.device, dtype=torch.float32)
    return torch.empty(n_users, n_items, device=scores.device).scatter_(1, order, positions.expand(n_users, -1))


def user_quantiles(scores: torch.Tensor, level: float) -> torch.Tensor:
    """Each user's quantile of its scores at `level`, linearly interpolated between the sorted
    scores (numpy.quantile's default), as an n_users × 1 column. By sorting: torch.quantile refuses
    large inputs."""
    ordered = scores.sort(dim=1).values
    position = level * (scores.shape[1] - 1)
    below = math.floor(position)
    above = min(below + 1, scores.shape[1] - 1)
    fraction = position - below
    return (ordered[:, below] + fraction * (ordered[:, above] - ordered[:, below])).unsqueeze(1)


def check_thresholds(hyperparameters: dict, where: str) -> None:
    if hyperparameters["thresholds"] == "quantile":
        for key in ("high", "low"):
            if not 0 <= hyperparameters[key] <= 1:
                raise ValueError(
                    f"{where}: rerank.{key} ({hyperparameters[key]}) must be in [0, 1] with thresholds: quantile"
                )


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    check_thresholds(hyperparameters, run.describe())
    return base_with_popularity(data, hyperparameters, run)


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    high, low = float(hyperparameters["high"]), float(hyperparameters["low"])
    by_quantile = hyperparameters["thresholds"] == "quantile"
    check_thresholds(hyperparameters, "rerank")
    base = state["base"].to(device=device, dtype=torch.float32)
    popularity = state["popularity"].to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        scores = predict(fold_in.to(device=device, dtype=torch.float32), base)
        if by_quantile:
            return ranking_key(scores, popularity, user_quantiles(scores, high), user_quantiles(scores, low))
        return ranking_key(scores, popularity, high, low)

    return score
