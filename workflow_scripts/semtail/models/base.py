"""What every method shares: what it is trained from (TrainingData), who trains it and where (TrainingRun),
and what its `fit` returns (Fitted). The training loop and the methods import these; this module
imports no method and does not list them (semtail.registry does)."""

from __future__ import annotations

import glob
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from semtail.checkpoint_cadence import CHECKPOINT_CADENCE
from semtail.files import partial_files

Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainingData:
    """What a method is trained from: binary user × item matrices (float32 CSR, one row per user)."""

    train: sp.csr_matrix
    validation_tr: sp.csr_matrix
    validation_te: sp.csr_matrix
    base_model: dict | None = None  # an on_base method's: the loaded model file of its base run (a method or variant)

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def n_train_users(self) -> int:
        return self.train.shape[0]

    def popularity(self) -> np.ndarray:
        """Training interactions per item."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)


@dataclass
class TrainingRun:
    """Who is training and where: everything a method needs besides data and hyperparameters."""

    dataset: str
    method: str
    seed: int | None  # None: the one run of a seed-independent method
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None  # SGD methods: where to keep the checkpoint
    fingerprint: str = ""  # identifies the job; a checkpoint is resumed only when it matches
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("semtail.train"))
    progress: bool = False  # show a tqdm bar over the batches of an epoch
    # Called with (epoch, U) at the end of every epoch, after its checkpoint if one was due (tests
    # use it to interrupt a run).
    after_epoch: Callable[[int, torch.Tensor], None] | None = None
    # A checkpoint is written after an epoch once this many epochs and this many seconds have
    # passed since the last one (or since training started): the config's `checkpoints` block,
    # checked by semtail.checkpoint_cadence.check_checkpoint_cadence.
    checkpoint_every_epochs: int = CHECKPOINT_CADENCE["every_epochs"]
    checkpoint_min_seconds: float = CHECKPOINT_CADENCE["min_seconds"]
    variant: str | None = None  # the name in the config's `methods:` when it is a variant of `method`

    def describe(self) -> str:
        seeding = "seed-independent" if self.seed is None else f"seed {self.seed}"
        return f"{self.dataset}/{self.variant or self.method} {seeding}"

    def best_weights_file(self, epoch: int) -> Path:
        """Beside the checkpoint: the best epoch's U, written once each time the best epoch is left
        behind, rather than into every epoch's checkpoint."""
        return self.checkpoint.with_name(f"{self.checkpoint.name}.best-epoch{epoch}")

    def best_weights_files(self) -> list[Path]:
        return sorted(self.checkpoint.parent.glob(f"{glob.escape(self.checkpoint.name)}.best-epoch*"))

    def remove_partial_files(self, left_by: str = "a killed job") -> None:
        """The checkpoint files left half-written: by a job killed outright while writing them, or
        (`left_by` "this job") by a signal handled as the temporary file was being made, before it
        had a name to remove it by (semtail.files.atomic_path)."""
        if self.checkpoint is None:
            return
        for stem in (self.checkpoint.stem, self.checkpoint.name):  # the checkpoint; the best epoch's U
            for path in partial_files(self.checkpoint.parent, stem):
                self.log.info("removing %s, left half-written by %s", path, left_by)
                path.unlink(missing_ok=True)

    def remove_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.unlink(missing_ok=True)
        for path in self.best_weights_files():
            path.unlink(missing_ok=True)


class TrainingTerminated(BaseException):
    """A signal ended the job: SIGTERM, as a cluster's scheduler sends at a time limit. A
    BaseException, as KeyboardInterrupt is, so that no `except Exception` takes it for an error
    of its own; the files being written are removed on its way out (semtail.files.atomic_path).
    The training loop adds where it stopped: the epoch, and that of the last checkpoint."""

    def __init__(
        self, signal_number: int, run: str = "", epoch: int | None = None, checkpoint_epoch: int | None = None
    ):
        super().__init__(signal_number, run, epoch, checkpoint_epoch)
        self.signal_number, self.run, self.epoch, self.checkpoint_epoch = signal_number, run, epoch, checkpoint_epoch

    def __str__(self) -> str:
        who = f"{self.run}: " if self.run else ""
        if self.epoch is None:
            return f"{who}terminated by signal ({signal.Signals(self.signal_number).name}); rerun with --rerun-incomplete to run it again"
        resume = (
            f" from the checkpoint after epoch {self.checkpoint_epoch}"
            if self.checkpoint_epoch
            else " (no checkpoint was written yet, so it starts over)"
        )
        return f"{who}terminated by signal at epoch {self.epoch}; rerun with --rerun-incomplete to resume{resume}"


# The signal that asked this process to end, once one has (semtail.train_job.ending_on_signal).
_termination_requested: list[int] = []


def terminate(signal_number: int, frame=None) -> None:
    """SIGTERM's handler in a training job: raises TrainingTerminated where the job is, and
    remembers the request. Python drops an exception raised inside a finalizer (an object's
    `__del__`, a weakref callback; tqdm has both) after printing it, so a signal handled there
    would be lost: the training loop asks `raise_if_terminated` after every step as well."""
    _termination_requested.append(signal_number)
    raise TrainingTerminated(signal_number)


def raise_if_terminated() -> None:
    if _termination_requested:
        raise TrainingTerminated(_termination_requested[0])


def forget_termination() -> None:
    _termination_requested.clear()


@dataclass
class Fitted:
    """What `fit` returns: the model file's method-specific part."""

    state: dict[str, torch.Tensor]
    item_weights: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None


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
        raise ValueError(
            f"{path}: expected a binary (0/1) interaction matrix, found values {np.unique(matrix.data)[:5]}"
        )
    if n_items is not None and matrix.shape[1] != n_items:
        raise ValueError(f"{path}: has {matrix.shape[1]} item columns, the training matrix has {n_items}")
    return matrix
