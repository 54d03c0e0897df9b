"""EASE trained by SGD: the paper's EASE baseline, and the learner of IPW, CVaR and POSIT.

    minimise over U (diagonal 0):   mean_i ℓ_i,    ℓ_i = 1000 · mean_{u ∈ batch} (x̂_ui − x_ui)²

With weight decay wd this approaches the closed-form EASE of the same data (ease_closed.py) with
λ = wd · n_users · n_items / 2000, the point where both have the same minimiser.
"""

from __future__ import annotations

import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import matrix_scorer, reconstruction_loss_per_item
from semtail.training import Objective, train

DECLARATION = {
    "training": "sgd",
    "hyperparameters": {},
    "state": {"U": ["items", "items"]},
    "item_item": "U",
    "resources": {"gpu": True},
    "figures": {"label": "EASE", "colour": "#0173b2", "marker": "o"},
}


class ReconstructionObjective(Objective):
    def batch_losses(self, predictions: torch.Tensor, interactions: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        return {"loss": reconstruction_loss_per_item(predictions, interactions).mean()}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    return train(data, hyperparameters, run, ReconstructionObjective())


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
