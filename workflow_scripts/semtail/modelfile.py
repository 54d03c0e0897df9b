"""The model file: one `torch.save`d dict per run (dataset, method, seed, or one seed-independent
run); docs/model_file.md describes every key. `model_file` builds one, `save_model` writes it,
`load_model` reads and checks one, and `scorer` turns it into a function from fold-in rows to
scores. What a method's `state` must hold comes from its declaration (semtail.registry).

A method on a base (training "on_base") holds its base's matrix as state["base"] in memory; its
file stores instead a reference to the base's model file (`base`: the path relative to its own
folder, and the base file's sha256), and loading reads the base back, refusing a changed one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from semtail import registry
from semtail.files import atomic_path, sha256
from semtail.models.base import Fitted, Scorer, TrainingData

FORMAT_VERSION = 3
BASE_REFERENCE_KEYS = ("path", "sha256", "method", "variant", "seed")
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
    "base",
)


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, or not in the expected format."""


def save_model(path: str | Path, model: dict) -> None:
    """Write a model file atomically, after checking it against the format. A method on a base
    stores the reference to its base's file, with the path relative to `path`'s folder, not the
    base's matrix."""
    check_model(model, source=str(path))
    if model["base"] is not None:
        folder = os.path.abspath(Path(path).parent)
        relative = Path(os.path.relpath(os.path.abspath(model["base"]["path"]), folder)).as_posix()
        state = {key: tensor for key, tensor in model["state"].items() if key != registry.BASE}
        model = {**model, "state": state, "base": {**model["base"], "path": relative}}
    with atomic_path(path) as tmp:
        torch.save(model, tmp)


def load_model(path: str | Path, mmap: bool = False) -> dict:
    """Read a model file (weights_only: no code is run) and check its format. With `mmap` the
    tensors stay in the file until used: for reading a large model's history or item weights.

    A method on a base gets its base's matrix back as state["base"], read from the base's model file,
    whose sha256 must be the one recorded; `base`'s path is then that file's path from here."""
    path = Path(path)
    model = _read(path, mmap)
    _check_header(model, str(path))
    if isinstance(model["base"], dict):
        model["state"] = {**model["state"], registry.BASE: _base_matrix(path, model, mmap)}
    check_model(model, source=str(path))
    return model


def _read(path: Path, mmap: bool):
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable model file ({type(error).__name__}: {error})") from None


def _base_matrix(path: Path, model: dict, mmap: bool) -> torch.Tensor:
    """The item–item matrix of the base that the model file at `path` refers to, checked to be the
    very file it was trained on."""
    reference = model["base"]
    missing = [key for key in BASE_REFERENCE_KEYS if key not in reference]
    if missing:
        raise ModelFileError(f"{path}: its base reference lacks {missing}")
    base_path = Path(os.path.normpath(path.parent / reference["path"]))
    if not base_path.is_file():
        raise ModelFileError(f"{path}: its base model file {base_path} is missing (train the base, then {path}, again)")
    digest = sha256(base_path)
    if digest != reference["sha256"]:
        raise ModelFileError(
            f"{path}: its base model file {base_path} has changed since it was trained on it (sha256 {digest}, "
            f"recorded {reference['sha256']}); train {path} again"
        )
    base = load_model(base_path, mmap=mmap)
    recorded = tuple(reference[key] for key in ("method", "variant", "seed")) + (model["dataset"], model["n_items"])
    found = tuple(base[key] for key in ("method", "variant", "seed", "dataset", "n_items"))
    if found != recorded:
        raise ModelFileError(
            f"{path}: its base {base_path} is (method, variant, seed, dataset, items) = {found}, expected {recorded}"
        )
    key = registry.declaration(base["method"]).item_item
    if key is None:
        raise ModelFileError(f"{path}: its base {base_path} is a {base['method']} model, which has no item–item matrix")
    model["base"] = {**reference, "path": str(base_path)}
    return base["state"][key]


def base_reference(path: str | Path, base: dict) -> dict:
    """What a model file on a base records of it: the base's model file `path` (as given; stored
    relative to the model file's folder) and sha256, and the base's method, variant and seed."""
    return {"path": str(path), "sha256": sha256(path), **{key: base[key] for key in ("method", "variant", "seed")}}


def _check_header(model, source: str) -> None:
    if not isinstance(model, dict):
        raise ModelFileError(f"{source}: expected a dict, found {type(model).__name__}")
    version = model.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{source}: format_version is {version!r}, this code reads version {FORMAT_VERSION}")
    missing = [key for key in MODEL_KEYS if key not in model]
    if missing:
        raise ModelFileError(f"{source}: missing keys {missing}")


def check_model(model, source: str = "model") -> None:
    """The model dict as it is in memory: a method on a base with its base's matrix in its state."""
    _check_header(model, source)
    if not isinstance(model["variant"], str):
        raise ModelFileError(f"{source}: variant must be a string, is {model['variant']!r}")
    try:
        declared = registry.declaration(model["method"])
    except registry.HyperparameterError as error:
        raise ModelFileError(f"{source}: {error}") from None
    seed = model["seed"]
    if seed is None and declared.seed_dependent:
        raise ModelFileError(f"{source}: {declared.name} depends on the seed, but the model file has none")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ModelFileError(f"{source}: seed must be an integer, or None for a seed-independent run, is {seed!r}")
    base = model["base"]
    if declared.training == "on_base":
        if not isinstance(base, dict) or any(key not in base for key in BASE_REFERENCE_KEYS):
            raise ModelFileError(
                f"{source}: {declared.name} is trained on a base: base must hold {', '.join(BASE_REFERENCE_KEYS)}"
            )
    elif base is not None:
        raise ModelFileError(f"{source}: {declared.name} has no base, but base is not None")
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
            raise ModelFileError(
                f"{source}: state[{key!r}] must be float32 on the CPU, is {tensor.dtype} on {tensor.device}"
            )
    weights = model["item_weights"]
    if declared.item_weights:
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n_items,):
            raise ModelFileError(
                f"{source}: {declared.name} learns item weights: item_weights must be a tensor of {n_items} items"
            )
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
    base: dict | None = None,
) -> dict:
    """The model file's dict, with every tensor as float32 on the CPU. `seed` is None for a
    seed-independent run; `base` (base_reference) that of a method on a base."""
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": method,
        "variant": variant,
        "seed": None if seed is None else int(seed),
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
        "base": None if base is None else dict(base),
    }
