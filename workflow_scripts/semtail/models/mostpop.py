"""Most popular: every user gets the same scores, the items' training popularity."""

from __future__ import annotations

import torch

from semtail.models import Fitted, Run, TrainingData


def fit(data: TrainingData, hyperparameters: dict, run: Run) -> Fitted:
    if hyperparameters:
        raise ValueError(f"hyperparameters.mostpop: takes none, got {sorted(hyperparameters)}")
    return Fitted(state={"popularity": torch.from_numpy(data.popularity()).float()})


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    popularity = state["popularity"].to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return popularity.expand(fold_in.shape[0], -1).clone()

    return score
