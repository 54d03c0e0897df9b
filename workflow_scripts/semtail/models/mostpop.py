"""Most popular: every user gets the same scores, the items' training popularity."""

from __future__ import annotations

import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun

DECLARATION = {
    "training": "closed_form",
    "hyperparameters": {},
    "state": {"popularity": ["items"]},
    "seed_dependent": False,
    "resources": {
        "gpu": False,
        "memory": {"sparse": 2},
        "runtime": {"sparse_passes": 2},
        "evaluation": {"dense": 0, "batch_entry_bytes": 4},
    },
    "figures": {"label": "MostPop", "colour": "#949494", "marker": "X", "outlier": True},
}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    return Fitted(state={"popularity": torch.from_numpy(data.popularity()).float()})


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    popularity = state["popularity"].to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return popularity.expand(fold_in.shape[0], -1).clone()

    return score
