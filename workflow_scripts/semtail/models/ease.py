"""EASE trained by SGD: the paper's EASE baseline, and the learner of IPW, CVaR and POSIT.

    minimise over U (diagonal 0):   mean_i ℓ_i,    ℓ_i = 1000 · mean_{u ∈ batch} (x̂_ui − x_ui)²

With weight decay wd this approaches the closed-form EASE of the same data (ease_closed.py) with
λ = wd · n_users · n_items / 2000, the point where both have the same minimiser.
"""

from __future__ import annotations

import torch

from semtail.models import Fitted, Run, TrainingData
from semtail.models.itemitem import matrix_scorer, reconstruction_loss_per_item
from semtail.training import SGD_KEYS, Objective, check_hyperparameters, train

HYPERPARAMETERS = SGD_KEYS


class ReconstructionObjective(Objective):
    def batch_losses(self, predictions: torch.Tensor, interactions: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        return {"loss": reconstruction_loss_per_item(predictions, interactions).mean()}


def fit(data: TrainingData, hyperparameters: dict, run: Run) -> Fitted:
    check_hyperparameters("ease", hyperparameters, HYPERPARAMETERS)
    return train(data, hyperparameters, run, ReconstructionObjective())


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
