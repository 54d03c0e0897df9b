"""The model file: one `torch.save`d dict per (dataset, method, seed); docs/model_file.md describes
every key. `model_file` builds one, `save_model` writes it, `load_model` reads and checks one, and
`scorer` turns it into a function from fold-in rows to scores. What a method's `state` must hold
comes from its declaration (semtail.registry)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from semtail import registry
from semtail.files import atomic_path
from semtail.models.base import Fitted, Scorer, TrainingData

FORMAT_VERSION = 2
MODEL_KEYS = (
    "format_version",
    "dataset",
    "method",
    "variant",
    "seed",
    "hyperparameters",
    "n_items",
    "n_train_users",
    "state",
    "item_weights",
    "history",
    "best_epoch",
    "code_version",
    "environment",
    "train_seconds",
)


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, or not in the expected format."""


def save_model(path: str | Path, model: dict) -> None:
    """Write a model file atomically, after checking it against the format."""
    check_model(model, source=str(path))
    with atomic_path(path) as tmp:
        torch.save(model, tmp)


def load_model(path: str | Path, mmap: bool = False) -> dict:
    """Read a model file (weights_only: no code is run) and check its format. With `mmap` the
    tensors stay in the file until used: for reading a large model's history or item weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        model = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable model file ({type(error).__name__}: {error})") from None
    check_model(model, source=str(path))
    return model


def check_model(model, source: str = "model") -> None:
    if not isinstance(model, dict):
        raise ModelFileError(f"{source}: expected a dict, found {type(model).__name__}")
    version = model.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{source}: format_version is {version!r}, this code reads version {FORMAT_VERSION}")
    missing = [key for key in MODEL_KEYS if key not in model]
    if missing:
        raise ModelFileError(f"{source}: missing keys {missing}")
    if not isinstance(model["variant"], str):
        raise ModelFileError(f"{source}: variant must be a string, is {model['variant']!r}")
    try:
        declared = registry.declaration(model["method"])
    except registry.HyperparameterError as error:
        raise ModelFileError(f"{source}: {error}") from None
    state = model["state"]
    n_items = model["n_items"]
    for key, dimensions in declared.state.items():
        tensor = state.get(key) if isinstance(state, dict) else None
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{source}: state[{key!r}] is missing or not a tensor")
        expected = tuple(n_items for _ in dimensions)
        if tuple(tensor.shape) != expected:
            raise ModelFileError(f"{source}: state[{key!r}] has shape {tuple(tensor.shape)}, expected {expected}")
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise ModelFileError(f"{source}: state[{key!r}] must be float32 on the CPU, is {tensor.dtype} on {tensor.device}")
    weights = model["item_weights"]
    if declared.item_weights:
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n_items,):
            raise ModelFileError(f"{source}: {declared.name} learns item weights: item_weights must be a tensor of {n_items} items")
    elif weights is not None:
        raise ModelFileError(f"{source}: {declared.name} learns no item weights, but item_weights is not None")


def scorer(model: dict, device: torch.device | str) -> Scorer:
    """A function from a dense float batch of fold-in rows (users × items, on `device`) to scores
    (users × items, higher is better). For rerank the scores are a ranking key: sorting them in
    descending order, ties to the lower item index, gives exactly the re-ranked order."""
    check_model(model)
    device = torch.device(device)
    return registry.method_module(model["method"]).scorer(model["state"], model["hyperparameters"], device)


def model_file(
    *,
    dataset: str,
    method: str,
    variant: str,
    seed: int,
    hyperparameters: dict,
    data: TrainingData,
    fitted: Fitted,
    code_version: str,
    environment: dict,
    train_seconds: float,
) -> dict:
    """The model file's dict, with every tensor as float32 on the CPU."""
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": method,
        "variant": variant,
        "seed": int(seed),
        "hyperparameters": json.loads(json.dumps(hyperparameters)),
        "n_items": int(data.n_items),
        "n_train_users": int(data.n_train_users),
        "state": {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in fitted.state.items()},
        "item_weights": None
        if fitted.item_weights is None
        else fitted.item_weights.detach().to("cpu", torch.float32).contiguous(),
        "history": json.loads(json.dumps(fitted.history)),
        "best_epoch": fitted.best_epoch,
        "code_version": code_version,
        "environment": {str(k): str(v) for k, v in environment.items()},  # plain str: weights_only loads it
        "train_seconds": float(train_seconds),
    }
