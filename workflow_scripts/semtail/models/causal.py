"""Popularity deconfounding (PD: Zhang et al., "Causal Intervention for Leveraging Popularity Bias
in Recommendation", SIGIR 2021) on the item–item learner: our definition of the paper's "Causal"
baseline, which neither the paper's text nor the authors' code defines.

Training models an interaction as the learner's score, made positive, times the item's popularity
to the power γ:

    ŷ_ui = ELU′(x̂_ui) · m_i^γ,    x̂_u = x_u · U,    ELU′(z) = e^z for z ≤ 0,  z + 1 for z > 0,

with m_i item i's training popularity divided by the largest one (an item nobody has gets
m_i^γ = 0 for γ > 0, and 1 for γ = 0). The loss is EASE's per-item squared error on ŷ,

    minimise over U (diagonal 0):   mean_i ℓ_i,    ℓ_i = 1000 · mean_{u ∈ batch} (ŷ_ui − x_ui)²,

with the same SGD, weight decay and early stopping as `ease`. Recommendation intervenes on
popularity by leaving the factor out: the scores are x_u · U (ELU′ is increasing, so they rank as
ELU′(x_u · U) would), and so are the validation scores that early stopping reads.
"""

from __future__ import annotations

import numpy as np
import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import RECONSTRUCTION_SCALE, matrix_scorer
from semtail.training import Objective, train

DECLARATION = {
    "training": "sgd",
    "hyperparameters": {
        "gamma": {
            "type": "number",
            "minimum": 0,
            "description": "γ, the exponent of the popularity factor m_i^γ in training (PD's conformity to popularity)",
        },
    },
    "state": {"U": ["items", "items"]},
    "item_item": "U",
    "resources": {"gpu": True},
    "figures": {"label": "Causal", "colour": "#ca9161", "marker": "v"},
}


def elu_prime(z: torch.Tensor) -> torch.Tensor:
    """ELU′(z) = e^z for z ≤ 0, z + 1 for z > 0: positive, increasing, continuous with its slope."""
    return torch.where(z > 0, z + 1, torch.exp(z.clamp(max=0)))


def popularity_factor(popularity: np.ndarray, gamma: float) -> torch.Tensor:
    """m_i^γ with m_i = n_i / max_j n_j, computed in float64 (0^0 = 1)."""
    counts = np.asarray(popularity, dtype=np.float64)
    return torch.from_numpy((counts / max(counts.max(), 1.0)) ** gamma).float()


class DeconfoundedSquaredError(torch.autograd.Function):
    """ℓ_i = 1000 · mean_u (ELU′(x̂_ui) · f_i − x_ui)² per item, f the popularity factor, with its
    gradient written out: ∂ℓ_i/∂x̂_ui = 2000 · (ŷ_ui − x_ui) · f_i · ELU″(x̂_ui) / |b|, where
    ELU″(z) = e^z for z ≤ 0 and 1 for z > 0. Keeps one batch × items tensor for the backward pass,
    and takes the slope at x̂ = 0, where training starts (U = 0), as 1: autograd through elu_prime's
    clamp would take it as 0 there, and U would never move."""

    @staticmethod
    def forward(ctx, predictions: torch.Tensor, interactions: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        positive = elu_prime(predictions)
        residual = positive * factor - interactions
        slope = torch.where(predictions > 0, 1.0, positive) * factor  # ∂ŷ/∂x̂
        ctx.save_for_backward(residual * slope)
        return residual.square().sum(dim=0) * (RECONSTRUCTION_SCALE / residual.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_per_item: torch.Tensor):
        (residual_slope,) = ctx.saved_tensors
        grad = residual_slope * (grad_per_item * (2 * RECONSTRUCTION_SCALE / residual_slope.shape[0]))
        return grad, None, None


class DeconfoundedObjective(Objective):
    def __init__(self, factor: torch.Tensor):
        super().__init__()
        self.register_buffer("factor", factor)

    def batch_losses(self, predictions: torch.Tensor, interactions: torch.Tensor, rows=None) -> dict[str, torch.Tensor]:
        return {"loss": DeconfoundedSquaredError.apply(predictions, interactions, self.factor).mean()}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    gamma = float(hyperparameters["gamma"])
    factor = popularity_factor(data.popularity(), gamma)
    run.log.info(
        "popularity factor m^%g: min %.4g, max %.4g over %d items", gamma, factor.min(), factor.max(), len(factor)
    )
    return train(data, hyperparameters, run, DeconfoundedObjective(factor))


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
