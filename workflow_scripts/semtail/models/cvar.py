"""Tail optimisation: the conditional value at risk (CVaR) of the per-entry reconstruction losses.

    minimise over U and a:   L = 1000 · λ · mean_{u,i} [ a + (1/β) · relu((x̂_ui − x_ui)² − a) ]

At the optimum in a, a is the (1 − β) quantile of the entry losses and L is 1000·λ times the mean
of the worst β fraction of them (Rockafellar and Uryasev, 2000). The scalar a has its own
learning rate (`alr`), no momentum and no weight decay; it starts at 0.
"""

from __future__ import annotations

import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import RECONSTRUCTION_SCALE, matrix_scorer
from semtail.training import Objective, train

DECLARATION = {
    "training": "sgd",
    "hyperparameters": {
        "lam": {"type": "number", "exclusiveMinimum": 0, "description": "λ, the factor of the learner loss"},
        "beta": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "description": "β, the tail fraction of the entry losses",
        },
        "alr": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "learning rate of the threshold a (no momentum)",
        },
    },
    "state": {"U": ["items", "items"]},
    "item_item": "U",
    "resources": {"gpu": True},
    "figures": {"label": "CVaR", "colour": "#cc78bc", "marker": "D"},
}


class TailObjective(Objective):
    def __init__(self, lam: float, beta: float, alr: float):
        super().__init__()
        self.lam, self.beta, self.alr = lam, beta, alr
        self.threshold = torch.nn.Parameter(torch.zeros(()))  # a

    def batch_losses(self, predictions: torch.Tensor, interactions: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        entry_loss = (predictions - interactions).square()
        a = self.threshold
        tail = a + torch.relu(entry_loss - a) / self.beta
        return {"loss": RECONSTRUCTION_SCALE * self.lam * tail.mean()}

    def parameter_groups(self) -> list[dict]:
        return [{"params": [self.threshold], "lr": self.alr}]

    def epoch_statistics(self) -> dict[str, float]:
        return {"threshold_a": self.threshold.item()}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    h = hyperparameters
    objective = TailObjective(float(h["lam"]), float(h["beta"]), float(h["alr"]))
    return train(data, hyperparameters, run, objective)


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
