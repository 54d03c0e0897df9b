"""A post-hoc popularity penalty on a base run's scores: our definition of the paper's "Post"
baseline, which neither the paper's text nor the authors' code defines.

    s′_ui = s_ui − γ · log(1 + n_i),

with s_ui = x_u · M the base run's scores (M its item–item matrix: `base` names a run in `methods:`
whose method scores so, e.g. ease or ease_closed, or a variant of one, trained with the same seed)
and n_i item i's number of training interactions. Nothing is trained; γ = 0 gives back the base's
scores, and so its lists, exactly.
"""

from __future__ import annotations

import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import matrix_scorer
from semtail.models.on_base import base_with_popularity

DECLARATION = {
    "training": "on_base",
    "hyperparameters": {
        "gamma": {
            "type": "number",
            "minimum": 0,
            "description": "γ, the weight of the penalty γ·log(1 + n_i) subtracted from the base's scores",
        },
    },
    "state": {"base": ["items", "items"], "popularity": ["items"]},
    "seed_dependent": False,  # adds nothing random: seed-independent exactly when its base is
    # The base model's matrix, read (and its checksum taken) when training and when scoring.
    "resources": {
        "gpu": False,
        "memory": {"dense": 1, "sparse": 2},
        "runtime": {"dense_file_passes": 2},
        "evaluation": {"batch_entry_bytes": 8},
    },
    "figures": {"label": "Post", "colour": "#fbafe4", "marker": "h"},
}


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    return base_with_popularity(data, hyperparameters, run)


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    base_scores = matrix_scorer(state["base"], device)
    penalty = float(hyperparameters["gamma"]) * torch.log1p(state["popularity"].to(device=device, dtype=torch.float32))

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return base_scores(fold_in) - penalty

    return score
