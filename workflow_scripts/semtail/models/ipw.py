"""Inverse-popularity weighting: EASE's per-item losses, weighted towards unpopular items.

    minimise   λ · mean_i (w_i · ℓ_i),    w_i = exp(−α·n_i) / mean_j exp(−α·n_j)

where n_i is item i's number of training interactions; the weights have mean 1.
"""

from __future__ import annotations

import numpy as np
import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import matrix_scorer, reconstruction_loss_per_item
from semtail.training import Objective, train

DECLARATION = {
    "training": "sgd",
    "hyperparameters": {
        "lam": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
            "description": "λ, the factor of the weighted learner loss",
        },
        "alpha": {
            "type": "number",
            "minimum": 0,
            "description": "w_i = exp(−α·n_i) / mean_j exp(−α·n_j), n_i the item's training count",
        },
    },
    "state": {"U": ["items", "items"]},
    "item_item": "U",
    "resources": {"gpu": True},
    "figures": {"label": "IPW", "colour": "#029e73", "marker": "s"},
}


def inverse_popularity_weights(popularity: np.ndarray, alpha: float) -> torch.Tensor:
    """w_i = exp(−α n_i) / mean_j exp(−α n_j), computed in float64 with the exponent shifted by
    min_j n_j (which cancels) so that no weight underflows to 0 for large α·n."""
    counts = np.asarray(popularity, dtype=np.float64)
    unnormalised = np.exp(-alpha * (counts - counts.min()))
    return torch.from_numpy(unnormalised / unnormalised.mean()).float()


class InversePopularityObjective(Objective):
    def __init__(self, weights: torch.Tensor, lam: float):
        super().__init__()
        self.register_buffer("weights", weights)
        self.lam = lam

    def batch_losses(self, predictions: torch.Tensor, interactions: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        per_item = reconstruction_loss_per_item(predictions, interactions)
        return {"loss": self.lam * (self.weights * per_item).mean()}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    alpha = float(hyperparameters["alpha"])
    weights = inverse_popularity_weights(data.popularity(), alpha)
    run.log.info(
        "IPW weights (alpha %g): min %.4g, max %.4g over %d items", alpha, weights.min(), weights.max(), len(weights)
    )
    return train(data, hyperparameters, run, InversePopularityObjective(weights, float(hyperparameters["lam"])))


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
