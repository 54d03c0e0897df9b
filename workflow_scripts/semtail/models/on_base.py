"""What the methods trained on top of a base run share (their declaration's training: on_base): the
base run's model file, checked to be of the same dataset, seed (or seed-independent) and catalog,
and its item–item matrix M, whose X·M are the base's scores. Their model files refer to the base's
file instead of storing M (semtail.modelfile)."""

from __future__ import annotations

import torch

from semtail import registry
from semtail.models.base import Fitted, TrainingData, TrainingRun


def base_matrix(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> torch.Tensor:
    """The base run's scoring matrix, from the loaded model file in `data.base_model`: a run of the
    same seed, or the one run of a seed-independent base."""
    base = data.base_model
    if base is None:
        raise ValueError(f"{run.describe()}: {run.method} needs the model file of its base run (input base_model)")
    expected = (run.dataset, hyperparameters["base"], run.seed if base["seed"] is not None else None, data.n_items)
    found = (base["dataset"], base["variant"], base["seed"], base["n_items"])
    if found != expected:
        raise ValueError(
            f"{run.method} of {run.describe()}: the base model is (dataset, variant, seed, items) = {found}, "
            f"expected {expected}"
        )
    key = registry.declaration(base["method"]).item_item
    if key is None:
        raise ValueError(
            f"{run.describe()}: its base {base['variant']!r} is a {base['method']} run, which does not score "
            "by an item–item matrix (its declaration has no item_item)"
        )
    return base["state"][key]


def base_with_popularity(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    """The state of a method that rescores its base's scores by the items' training popularity
    (rerank, post): the base's matrix and the popularity, nothing trained."""
    popularity = torch.from_numpy(data.popularity()).float()
    return Fitted(state={"base": base_matrix(data, hyperparameters, run), "popularity": popularity})
