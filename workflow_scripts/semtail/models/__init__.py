"""The methods, the model file they write, and scoring from a model file.

A model file is one `torch.save`d dict per (dataset, method, seed); docs/model_file.md describes
every key. `load_model` reads and checks one, `scorer` turns it into a function from fold-in rows
to scores. Each method lives in its own module, `semtail.models.<method>`, with
`fit(data, hyperparameters, run) -> Fitted` and `scorer(state, hyperparameters, device)`.

This package imports no method module by an import statement: provenance.code_version hashes a
method's imports, and a static import here would make every method depend on every other.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from semtail.files import atomic_path

FORMAT_VERSION = 2
METHODS = ("mostpop", "ease_closed", "ease", "ipw", "cvar", "posit", "rerank")
SGD_METHODS = ("ease", "ipw", "cvar", "posit")
# The tensors in `state` that scoring needs, per method.
STATE_KEYS = {
    "mostpop": ("popularity",),
    "ease_closed": ("B",),
    "ease": ("U",),
    "ipw": ("U",),
    "cvar": ("U",),
    "posit": ("U",),
    "rerank": ("base", "popularity"),
}
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

Scorer = Callable[[torch.Tensor], torch.Tensor]


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, or not in the expected format."""


@dataclass
class TrainingData:
    """What a method is trained from: binary user × item matrices (float32 CSR, one row per user)."""

    train: sp.csr_matrix
    validation_tr: sp.csr_matrix
    validation_te: sp.csr_matrix
    base_model: dict | None = None  # rerank: the loaded model file of its base method

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def n_train_users(self) -> int:
        return self.train.shape[0]

    def popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)


# The config's `checkpoints` block, as the defaults that apply where it is left out.
CHECKPOINT_CADENCE = {"every_epochs": 1, "min_seconds": 0.0}


def check_checkpoint_cadence(cadence: dict, where: str = "checkpoints") -> dict:
    """The checkpoint cadence with its defaults filled in; a wrong key or value is an error naming it."""
    unknown = sorted(set(cadence) - set(CHECKPOINT_CADENCE))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(CHECKPOINT_CADENCE)})")
    resolved = {**CHECKPOINT_CADENCE, **cadence}
    every, seconds = resolved["every_epochs"], resolved["min_seconds"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"{where}.every_epochs must be an integer of at least 1, got {every!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"{where}.min_seconds must be a number of at least 0, got {seconds!r}")
    return {"every_epochs": every, "min_seconds": float(seconds)}


@dataclass
class Run:
    """Who is training and where: everything a method needs besides data and hyperparameters."""

    dataset: str
    method: str
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None  # SGD methods: where to keep the checkpoint
    fingerprint: str = ""  # identifies the job; a checkpoint is resumed only when it matches
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("semtail.train"))
    progress: bool = False  # show a tqdm bar over the batches of an epoch
    # Called with (epoch, U) at the end of every epoch, after its checkpoint if one was due (tests
    # use it to interrupt a run).
    after_epoch: Callable[[int, torch.Tensor], None] | None = None
    # A checkpoint is written after an epoch once this many epochs and this many seconds have
    # passed since the last one (or since training started); see CHECKPOINT_CADENCE.
    checkpoint_every_epochs: int = 1
    checkpoint_min_seconds: float = 0.0
    variant: str | None = None  # the name in the config's `methods:` when it is a variant of `method`

    def __post_init__(self) -> None:
        check_checkpoint_cadence({"every_epochs": self.checkpoint_every_epochs, "min_seconds": self.checkpoint_min_seconds})

    def describe(self) -> str:
        return f"{self.dataset}/{self.variant or self.method} seed {self.seed}"

    def best_weights_file(self, epoch: int) -> Path:
        """Beside the checkpoint: the best epoch's U, written once each time the best epoch is left
        behind, rather than into every epoch's checkpoint."""
        return self.checkpoint.with_name(f"{self.checkpoint.name}.best-epoch{epoch}")

    def best_weights_files(self) -> list[Path]:
        return sorted(self.checkpoint.parent.glob(f"{glob.escape(self.checkpoint.name)}.best-epoch*"))

    def remove_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.unlink(missing_ok=True)
        for path in self.best_weights_files():
            path.unlink(missing_ok=True)


@dataclass
class Fitted:
    """What `fit` returns: the model file's method-specific part."""

    state: dict[str, torch.Tensor]
    item_weights: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None


def method_module(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    return importlib.import_module(f"{__name__}.{method}")


def read_interactions(path: str | Path, n_items: int | None = None) -> sp.csr_matrix:
    """A binary user × item matrix from a scipy .npz file, as float32 CSR with sorted indices."""
    path = Path(path)
    try:
        matrix = sp.load_npz(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as error:  # a corrupt or foreign file: say which one
        raise ValueError(f"{path}: not a scipy sparse .npz matrix ({error})") from None
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.sort_indices()
    if matrix.nnz and not np.all(matrix.data == 1.0):
        raise ValueError(f"{path}: expected a binary (0/1) interaction matrix, found values {np.unique(matrix.data)[:5]}")
    if n_items is not None and matrix.shape[1] != n_items:
        raise ValueError(f"{path}: has {matrix.shape[1]} item columns, the training matrix has {n_items}")
    return matrix


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
    method = model["method"]
    if not isinstance(model["variant"], str):
        raise ModelFileError(f"{source}: variant must be a string, is {model['variant']!r}")
    if method not in STATE_KEYS:
        raise ModelFileError(f"{source}: unknown method {method!r}")
    state = model["state"]
    n_items = model["n_items"]
    for key in STATE_KEYS[method]:
        tensor = state.get(key) if isinstance(state, dict) else None
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{source}: state[{key!r}] is missing or not a tensor")
        expected = (n_items,) if key == "popularity" else (n_items, n_items)
        if tuple(tensor.shape) != expected:
            raise ModelFileError(f"{source}: state[{key!r}] has shape {tuple(tensor.shape)}, expected {expected}")
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise ModelFileError(f"{source}: state[{key!r}] must be float32 on the CPU, is {tensor.dtype} on {tensor.device}")
    weights = model["item_weights"]
    if weights is not None and (not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n_items,)):
        raise ModelFileError(f"{source}: item_weights must be None or a tensor of {n_items} items")


def scorer(model: dict, device: torch.device | str) -> Scorer:
    """A function from a dense float batch of fold-in rows (users × items, on `device`) to scores
    (users × items, higher is better). For rerank the scores are a ranking key: sorting them in
    descending order, ties to the lower item index, gives exactly the re-ranked order."""
    check_model(model)
    device = torch.device(device)
    return method_module(model["method"]).scorer(model["state"], model["hyperparameters"], device)


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



def fingerprint(
    *, dataset: str, method: str, variant: str, seed: int, hyperparameters: dict, code_version: str, inputs: dict
) -> str:
    """What a checkpoint must match to be resumed: the job's identity, its hyperparameters and
    code, and the size and modification time of every input file."""
    files = {}
    for name, path in sorted(inputs.items()):
        stat = Path(path).stat()
        files[name] = [str(path), stat.st_size, stat.st_mtime_ns]
    identity = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "method": method,
        "variant": variant,
        "seed": int(seed),
        "hyperparameters": hyperparameters,
        "code_version": code_version,
        "inputs": files,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def read_training_data(inputs: dict) -> TrainingData:
    """The split (and, for rerank, the base model) from the train rule's input files."""
    train = read_interactions(inputs["train"])
    data = TrainingData(
        train=train,
        validation_tr=read_interactions(inputs["validation_tr"], n_items=train.shape[1]),
        validation_te=read_interactions(inputs["validation_te"], n_items=train.shape[1]),
    )
    if data.validation_tr.shape[0] != data.validation_te.shape[0]:
        raise ValueError(
            f"{inputs['validation_tr']} has {data.validation_tr.shape[0]} users, "
            f"{inputs['validation_te']} has {data.validation_te.shape[0]}"
        )
    if inputs.get("base_model"):
        data.base_model = load_model(inputs["base_model"])
    return data


def train_and_save(
    *,
    dataset: str,
    method: str,
    seed: int,
    hyperparameters: dict,
    inputs: dict,
    output: str | Path,
    device: torch.device,
    environment: dict,
    code_version: str,
    variant: str | None = None,
    checkpoint: str | Path | None = None,
    log: logging.Logger | None = None,
    progress: bool = False,
    after_epoch: Callable[[int, torch.Tensor], None] | None = None,
    checkpoint_cadence: dict | None = None,
) -> dict:
    """Train one (dataset, method, seed) job and write its model file; returns the model dict.

    `environment` is recorded in the model file: software versions and, under "device", the
    device in words (semtail.provenance.environment() and semtail.device.describe()).

    `variant` is the run's name in the config's `methods:` when it is a variant of `method`.

    The checkpoint of an SGD method is written on `checkpoint_cadence` (the config's `checkpoints`
    block) and removed once the model file is written; a failure leaves no model file (and the last
    checkpoint, for a rerun to resume from)."""
    log = log or logging.getLogger("semtail.train")
    variant = variant or method
    cadence = check_checkpoint_cadence(checkpoint_cadence or {})
    data = read_training_data(inputs)
    run = Run(
        dataset=dataset,
        method=method,
        variant=variant,
        seed=int(seed),
        device=device,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        fingerprint=fingerprint(
            dataset=dataset,
            method=method,
            variant=variant,
            seed=seed,
            hyperparameters=hyperparameters,
            code_version=code_version,
            inputs=inputs,
        ),
        log=log,
        progress=progress,
        after_epoch=after_epoch,
        checkpoint_every_epochs=cadence["every_epochs"],
        checkpoint_min_seconds=cadence["min_seconds"],
    )
    log.info(
        "training %s on %d users x %d items (%d interactions), %d validation users, on %s",
        run.describe(),
        data.n_train_users,
        data.n_items,
        data.train.nnz,
        data.validation_tr.shape[0],
        environment.get("device", device),
    )
    started = time.perf_counter()
    fitted = method_module(method).fit(data, hyperparameters, run)
    seconds = time.perf_counter() - started
    model = model_file(
        dataset=dataset,
        method=method,
        variant=variant,
        seed=seed,
        hyperparameters=hyperparameters,
        data=data,
        fitted=fitted,
        code_version=code_version,
        environment=environment,
        train_seconds=seconds,
    )
    save_model(output, model)
    run.remove_checkpoint()
    log.info("wrote %s (best epoch %s) after %.1f s", output, fitted.best_epoch, seconds)
    return model
