"""SGD training of the item-item matrix U, shared by every method declared training: sgd.

U starts at 0 and its diagonal is held at 0. Each epoch visits the training users in batches, in an
order reshuffled every epoch by a generator seeded with the job's seed; with `drop_last` the last
partial batch of each epoch is left out, as the authors' loader does (it serves ⌊users / batch⌋
batches). On a batch X_b the method's `Objective` turns the predictions x̂ = X_b·U into losses;
their gradient G with respect to x̂ gives U's gradient X_bᵀ·G by a sparse product, and SGD
(momentum 0.9, weight decay wd) takes a step. On the CPU the gradient is computed and applied a
block of U's rows at a time, so that training holds U, its momentum and of the gradient one block
(PyTorch's fused SGD kernel on each block; the result is bit for bit that of one step over the
whole matrix), and the best epoch's U, once U moves past it, is kept in the run's best-weights
file beside the checkpoint, not in memory. The objective's own parameters (CVaR's threshold,
POSIT's adversary) are stepped by the same optimizer in a group of their own: their own learning
rate and weight decay, no momentum. Every learning rate follows a cosine annealing over the
epochs, stepped once per epoch.

After each epoch: NDCG@100 on the validation users (fold-in rows scored, fold-in items excluded,
held-out rows as relevance), early stopping with a patience, a copy of the best epoch's weights
(on the CPU in the best-weights file when the run has a checkpoint, else on the host), and, on
the run's cadence (every N epochs, at most every M seconds), a checkpoint from which a killed job
continues bit for bit. A NaN or inf stops the job.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from semtail.files import atomic_path
from semtail.metrics import ndcg_at_k, rank_top_k
from semtail.models.base import Fitted, TrainingData, TrainingRun, TrainingTerminated, raise_if_terminated
from semtail.models.itemitem import predict, to_torch_csr
from semtail.sgd import CosineAnnealedSGD, fused_step

MOMENTUM = 0.9
VALIDATION_K = 100
VALIDATION_METRIC = f"val_ndcg@{VALIDATION_K}"
# Validation users are scored in batches of about this many score entries (float32).
VALIDATION_BATCH_ENTRIES = 2**25
# On the CPU, U's gradient is computed and applied in blocks of rows of at most this many bytes
# (float32). A block holds a multiple of GRADIENT_BLOCK_ALIGNMENT entries, so that each block starts
# where a vector of the fused SGD kernel would start in the whole matrix (vectors of at most 16
# floats), and the blocks' results are those of the whole matrix bit for bit.
GRADIENT_BLOCK_BYTES = 2**27
GRADIENT_BLOCK_ALIGNMENT = 64
CHECKPOINT_VERSION = 3
# The hyperparameters this loop adds to every method whose declaration says training: sgd, declared
# as a method declares its own (semtail.registry reads this without importing the module).
DECLARATION = {
    "hyperparameters": {
        "lr": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "learning rate of U (SGD, momentum 0.9, cosine annealing over the epochs)",
        },
        "wd": {
            "type": "number",
            "minimum": 0,
            "description": "weight decay of U; with the 1000·mean loss it equals an L2 penalty λ = wd·users·items/2000",
        },
        "batch_size": {"type": "integer", "minimum": 1, "description": "training users per minibatch"},
        "epochs": {
            "type": "integer",
            "minimum": 1,
            "default": 50,
            "description": "at most this many epochs (also the period of the cosine annealing)",
        },
        "patience": {
            "type": "integer",
            "minimum": 1,
            "default": 10,
            "description": "stop after this many epochs without a better validation NDCG@100",
        },
        "drop_last": {
            "type": "boolean",
            "default": True,
            "description": "true: leave out the last partial batch of each epoch, as the authors' loader does (⌊users / batch_size⌋ batches); false: every training user every epoch",
        },
    }
}
checkpoint_clock = time.monotonic  # the seconds of the checkpoint cadence (tests replace it)


def gradient_block_rows(n_items: int, device: torch.device) -> int:
    """Rows of U per block of its gradient: all of them on a GPU (one product, one kernel, no sync
    with the host); on the CPU as many as fit in GRADIENT_BLOCK_BYTES, a multiple of the rows that
    hold a multiple of GRADIENT_BLOCK_ALIGNMENT entries."""
    if device.type != "cpu":
        return n_items
    unit = GRADIENT_BLOCK_ALIGNMENT // math.gcd(n_items, GRADIENT_BLOCK_ALIGNMENT)
    rows = GRADIENT_BLOCK_BYTES // (4 * n_items) // unit * unit
    return min(n_items, max(unit, rows))


class TrainingDiverged(FloatingPointError):
    """The loss or the weights stopped being finite numbers."""


@dataclass(frozen=True)
class SGDSettings:
    lr: float
    wd: float
    batch_size: int
    epochs: int
    patience: int
    drop_last: bool

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict) -> SGDSettings:
        """The loop's settings from a method's hyperparameters, which its declaration has checked
        (semtail.registry's `complete`)."""
        h = hyperparameters
        return cls(
            lr=float(h["lr"]),
            wd=float(h["wd"]),
            batch_size=int(h["batch_size"]),
            epochs=int(h["epochs"]),
            patience=int(h["patience"]),
            drop_last=bool(h["drop_last"]),
        )

    def batches(self, n_users: int) -> int:
        """Minibatches per epoch: every user, or with drop_last only full batches."""
        return n_users // self.batch_size if self.drop_last else -(-n_users // self.batch_size)


class Objective(torch.nn.Module):
    """A method's loss on a batch. Subclasses define `batch_losses`; everything they return is
    minimised together, and each entry is logged by its name ("loss" is the learner's).
    `batch_losses` gets the batch's predictions and interactions as dense users × items tensors,
    and the interactions again as sparse CSR (`rows`), for losses that only look at positives."""

    def initialize(self, generator: torch.Generator) -> None:
        """Draw the initial values of the objective's own parameters."""

    def batch_losses(
        self, predictions: torch.Tensor, interactions: torch.Tensor, rows: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameter_groups(self) -> list[dict]:
        """Optimizer groups for the objective's own parameters (momentum 0 unless said otherwise)."""
        return []

    def epoch_statistics(self) -> dict[str, float]:
        """Numbers for the epoch's log line and history, computed once at the end of an epoch."""
        return {}

    def item_weights(self) -> torch.Tensor | None:
        """The item weights the objective would use now (POSIT), kept with the best epoch."""
        return None


class DeviceRows:
    """A binary CSR matrix kept on the device, sliced into batches of rows there.

    Row offsets are also kept on the host, so slicing a batch needs no transfer from the device.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, n_cols: int, crow_host: np.ndarray):
        self.crow = crow
        self.col = col
        self.n_cols = n_cols
        self.crow_host = crow_host
        self.ones = torch.ones(col.shape[0], device=col.device)

    @classmethod
    def from_scipy(cls, matrix: sp.csr_matrix, device: torch.device) -> DeviceRows:
        tensor = to_torch_csr(matrix, device)
        return cls(tensor.crow_indices(), tensor.col_indices(), matrix.shape[1], matrix.indptr.astype(np.int64))

    @property
    def n_rows(self) -> int:
        return len(self.crow_host) - 1

    @property
    def nnz(self) -> int:
        return int(self.crow_host[-1])

    def rows(self, start: int, stop: int) -> torch.Tensor:
        first, last = int(self.crow_host[start]), int(self.crow_host[stop])
        return torch.sparse_csr_tensor(
            self.crow[start : stop + 1] - first,
            self.col[first:last],
            self.ones[first:last],
            size=(stop - start, self.n_cols),
            check_invariants=False,
        )

    def lengths(self, start: int, stop: int) -> torch.Tensor:
        """The number of entries of each row."""
        return self.crow[start + 1 : stop + 1] - self.crow[start:stop]

    def mask(self, start: int, stop: int) -> torch.Tensor:
        """The rows as a dense bool tensor: a quarter of a float one, and no conversion to rank by."""
        first, last = int(self.crow_host[start]), int(self.crow_host[stop])
        row = torch.arange(stop - start, device=self.col.device).repeat_interleave(
            self.lengths(start, stop), output_size=last - first
        )
        dense = torch.zeros(stop - start, self.n_cols, dtype=torch.bool, device=self.col.device)
        dense[row, self.col[first:last]] = True
        return dense

    def permuted(self, order: torch.Tensor) -> DeviceRows:
        """The rows in the given order, gathered on the device."""
        lengths = (self.crow[1:] - self.crow[:-1])[order]
        crow = torch.zeros(len(order) + 1, dtype=torch.long, device=self.crow.device)
        torch.cumsum(lengths, 0, out=crow[1:])
        row_of_entry = torch.repeat_interleave(
            torch.arange(len(order), device=self.crow.device), lengths, output_size=self.nnz
        )
        source = (
            self.crow[:-1][order][row_of_entry] + torch.arange(self.nnz, device=self.crow.device) - crow[row_of_entry]
        )
        return DeviceRows(crow, self.col[source], self.n_cols, crow.cpu().numpy())


def validation_ndcg(matrix: torch.Tensor, fold_in: DeviceRows, heldout: DeviceRows, k: int = VALIDATION_K) -> float:
    """Mean NDCG@k over validation users with a held-out item: fold-in rows scored by `matrix`,
    fold-in items excluded from the ranking."""
    rows_per_batch = max(1, VALIDATION_BATCH_ENTRIES // max(fold_in.n_cols, 1))
    total = torch.zeros((), dtype=torch.float64, device=matrix.device)
    counted = torch.zeros((), dtype=torch.long, device=matrix.device)
    for start in range(0, fold_in.n_rows, rows_per_batch):
        stop = min(start + rows_per_batch, fold_in.n_rows)
        top = rank_top_k(
            predict(fold_in.rows(start, stop), matrix), k, exclude=fold_in.mask(start, stop), overwrite=True
        )
        per_user = ndcg_at_k(top, heldout.mask(start, stop), k, n_heldout=heldout.lengths(start, stop))
        valid = ~per_user.isnan()
        total += per_user[valid].double().sum()
        counted += valid.sum()
    return (total / counted).item()


@contextmanager
def sigterm_held() -> Iterator[None]:
    """SIGTERM arriving inside the block is handled when it ends, by the handler it would have met.
    The handler is swapped in Python, not masked in the kernel: a signal sent to the process may be
    taken by any of torch's threads, and Python then runs its handler on the main thread at once,
    whatever that thread's mask. Outside the main thread (no handlers there) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            if callable(previous):
                previous(signal.SIGTERM, None)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGTERM)


class Trainer:
    """One SGD training run of U under an objective; `fit()` returns the best epoch's model."""

    def __init__(self, data: TrainingData, hyperparameters: dict, run: TrainingRun, objective: Objective):
        self.run = run
        self.settings = SGDSettings.from_hyperparameters(hyperparameters)
        self.device = run.device
        n_items = data.n_items
        self.train_rows = DeviceRows.from_scipy(data.train, self.device)
        self.batches_per_epoch = self.settings.batches(self.train_rows.n_rows)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{run.describe()}: hyperparameters.{run.variant or run.method}.drop_last is true and the "
                f"{self.train_rows.n_rows} training users are fewer than batch_size "
                f"{self.settings.batch_size}: no batch would be trained on"
            )
        self.validation_fold_in = DeviceRows.from_scipy(data.validation_tr, self.device)
        self.validation_heldout = DeviceRows.from_scipy(data.validation_te, self.device)
        if data.validation_tr.shape[0] != data.validation_te.shape[0]:
            raise ValueError("validation_tr and validation_te have different numbers of users")
        if data.validation_te.nnz == 0:
            raise ValueError("the validation split has no held-out interactions: early stopping needs some")

        self.generator = torch.Generator().manual_seed(int(run.seed))
        self.objective = objective.to(self.device)
        self.objective.initialize(self.generator)
        self.U = torch.zeros(n_items, n_items, device=self.device)
        # One block of U's gradient; U itself has no .grad, so that the optimizer steps only the
        # objective's parameters, and U (with the momentum in the optimizer's state) in `update_U`.
        self.gradient = torch.empty(gradient_block_rows(n_items, self.device), n_items, device=self.device)
        s = self.settings
        self.optimizer = CosineAnnealedSGD(
            [{"params": [self.U], "lr": s.lr, "momentum": MOMENTUM, "weight_decay": s.wd}]
            + [{"lr": s.lr, **group} for group in self.objective.parameter_groups()],
            epochs=s.epochs,
        )

        self.epoch = 0
        self.history: list[dict] = []
        self.best_ndcg = -math.inf
        self.best_epoch: int | None = None
        self.best_U: torch.Tensor | None = None  # a copy on the host, made before U moves past its best epoch
        self.best_is_current = False
        self.best_item_weights: torch.Tensor | None = None
        self.best_U_saved_epoch: int | None = None  # the epoch whose U the best-weights file holds
        self.checkpointed_best_file: Path | None = None  # the best-weights file the checkpoint on disk names
        # On the CPU with a checkpoint, the best epoch's U is kept in the best-weights file rather than
        # in a host copy: on a GPU the host copy costs no device memory and no disk traffic per epoch.
        self.best_in_file = self.device.type == "cpu" and run.checkpoint is not None
        self.epochs_without_improvement = 0
        self.stopped = False
        self.last_checkpoint = (0, 0.0)  # (epoch, checkpoint_clock()) of the last checkpoint, or of the start

    # -- one step -------------------------------------------------------------------------------

    def step(self, rows: torch.Tensor, loss_sums: dict[str, torch.Tensor], nonfinite: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            predictions = predict(rows, self.U)
        predictions.requires_grad_(True)
        losses = self.objective.batch_losses(predictions, rows.to_dense(), rows)
        total = sum(losses.values())
        self.objective.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.update_U(rows.t().to_sparse_csr(), predictions.grad)
        with torch.no_grad():
            for name, value in losses.items():
                loss_sums[name] = loss_sums.get(name, 0) + value.detach()
            return nonfinite | ~torch.isfinite(total.detach())

    def update_U(self, transposed_rows: torch.Tensor, prediction_gradient: torch.Tensor) -> None:
        """U's SGD step (momentum, weight decay, the optimizer's current learning rate), with its
        gradient dL/dU = X_bᵀ · dL/dx̂ computed a block of rows at a time into `self.gradient`, the
        block's diagonal entries zeroed (they stay out of U), and the block stepped by the fused
        kernel that `CosineAnnealedSGD.step` runs on the whole matrix."""
        group = self.optimizer.param_groups[0]
        [momentum], first_step = self.optimizer.momentum_buffers([self.U])
        n_items, block_rows = self.U.shape[0], self.gradient.shape[0]
        bounds = list(range(0, n_items, block_rows)) + [n_items]
        crow, col, values = transposed_rows.crow_indices(), transposed_rows.col_indices(), transposed_rows.values()
        offsets = crow[bounds].tolist() if len(bounds) > 2 else [0, col.shape[0]]
        for (start, stop), (first, last) in zip(zip(bounds, bounds[1:]), zip(offsets, offsets[1:])):
            if len(bounds) > 2:
                block = torch.sparse_csr_tensor(
                    crow[start : stop + 1] - first,
                    col[first:last],
                    values[first:last],
                    size=(stop - start, transposed_rows.shape[1]),
                    check_invariants=False,
                )
            else:
                block = transposed_rows
            gradient = self.gradient[: stop - start]
            torch.addmm(gradient, block, prediction_gradient, beta=0, out=gradient)
            gradient.diagonal(start).zero_()
            fused_step(group, [self.U[start:stop]], [gradient], [momentum[start:stop]], first_step)

    def train_epoch(self) -> dict[str, float]:
        s = self.settings
        self.keep_best_copy()
        order = torch.randperm(self.train_rows.n_rows, generator=self.generator).to(self.device)
        shuffled = self.train_rows.permuted(order)
        starts = range(0, self.batches_per_epoch * s.batch_size, s.batch_size)
        loss_sums: dict[str, torch.Tensor] = {}
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        bar = tqdm(starts, desc=f"epoch {self.epoch + 1}/{s.epochs}", leave=False, disable=not self.run.progress)
        for start in bar:
            nonfinite = self.step(
                shuffled.rows(start, min(start + s.batch_size, shuffled.n_rows)), loss_sums, nonfinite
            )
            raise_if_terminated()
        self.check_finite(bool(nonfinite), "the loss")
        return {name: (total / len(starts)).item() for name, total in loss_sums.items()}

    def check_finite(self, nonfinite: bool, what: str) -> None:
        if nonfinite:
            current = self.optimizer.param_groups[0]["lr"]
            lr, wd = self.settings.lr, self.settings.wd
            raise TrainingDiverged(
                f"{self.run.describe()}: {what} became NaN or infinite in epoch {self.epoch + 1} "
                f"(lr {lr:g}, annealed to {current:g} in this epoch; wd {wd:g}); no model file is written. "
                f"Lower lr or wd: with momentum {MOMENTUM:g}, the weight decay alone diverges once lr·wd "
                f"exceeds {2 * (1 + MOMENTUM):g} (here lr·wd = {lr * wd:g})."
            )

    # -- epochs, early stopping and checkpoints -------------------------------------------------

    def fit(self) -> Fitted:
        self.run.remove_partial_files()
        self.resume()
        self.remove_unneeded_best_files()
        self.last_checkpoint = (self.epoch, checkpoint_clock())
        try:
            self.train_epochs()
        except TrainingTerminated as stop:
            self.remove_unneeded_best_files()
            self.run.remove_partial_files(left_by="this job")
            checkpoint_epoch = self.last_checkpoint[0] if self.run.checkpoint is not None else None
            epoch = min(self.epoch + 1, self.settings.epochs)  # the epoch under way (or its checkpoint)
            raise TrainingTerminated(stop.signal_number, self.run.describe(), epoch, checkpoint_epoch) from None
        return Fitted(
            state={"U": self.best_weights()},
            item_weights=self.best_item_weights,
            history=self.history,
            best_epoch=self.best_epoch,
        )

    def train_epochs(self) -> None:
        s, log = self.settings, self.run.log
        while not self.stopped and self.epoch < s.epochs:
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            losses = self.train_epoch()
            # A sum is finite only if every term is (an overflow also means divergence).
            weights_finite = all(bool(torch.isfinite(p.sum())) for p in [self.U, *self.objective.parameters()])
            self.check_finite(not weights_finite, "the weights")
            self.epoch += 1
            ndcg = validation_ndcg(self.U, self.validation_fold_in, self.validation_heldout)
            statistics = self.objective.epoch_statistics()
            if ndcg > self.best_ndcg:
                self.best_ndcg, self.best_epoch = ndcg, self.epoch
                self.best_is_current = True  # copied out before the next epoch changes U
                weights = self.objective.item_weights()
                self.best_item_weights = None if weights is None else weights.detach().cpu().clone()
                self.epochs_without_improvement = 0
            else:
                self.epochs_without_improvement += 1
            self.stopped = self.epochs_without_improvement >= s.patience
            self.optimizer.anneal()
            seconds = time.perf_counter() - started
            entry = {"epoch": self.epoch, **losses, VALIDATION_METRIC: ndcg, "lr": lr, **statistics, "seconds": seconds}
            self.history.append(entry)
            log.info(
                "epoch %d/%d: %s %s %.5f (best %.5f at epoch %d)%s, %.1f s%s",
                self.epoch,
                s.epochs,
                " ".join(f"{name} {value:.5g}" for name, value in losses.items()),
                VALIDATION_METRIC,
                ndcg,
                self.best_ndcg,
                self.best_epoch,
                "".join(f", {name} {value:.4g}" for name, value in statistics.items()),
                seconds,
                ", early stop" if self.stopped else "",
            )
            if self.checkpoint_due():
                self.save_checkpoint()
            if self.run.after_epoch is not None:
                self.run.after_epoch(self.epoch, self.U)

    def best_weights(self) -> torch.Tensor:
        """The best epoch's U on the host, without a copy where there is one already: training is
        over, so the live U on the CPU is returned itself; on a GPU it goes into the host copy. From
        the best-weights file it is read only after U and its momentum are let go, so that the end
        holds no more item × item matrices than a step."""
        if self.best_is_current and self.U.device.type == "cpu":
            return self.U.detach()
        if self.best_in_file:
            self.release_weights()
            path = self.run.best_weights_file(self.best_epoch)
            try:
                return torch.load(path, map_location="cpu", weights_only=True)["U"]
            except Exception as error:
                raise RuntimeError(
                    f"{self.run.describe()}: the best epoch's U cannot be read back from {path} ({error})"
                ) from error
        self.keep_best_copy()
        return self.best_U

    def release_weights(self) -> None:
        """Let go of U, its momentum and the gradient block, once training is over."""
        self.optimizer.state.clear()
        del self.U, self.gradient, self.optimizer

    def keep_best_copy(self) -> None:
        """Before U moves past its best epoch, copy it out: into the best-weights file (see
        `best_in_file`), or to the host, where it needs no device memory. The copy is never a
        reference to the live U."""
        if not self.best_is_current:
            return
        if self.best_in_file:
            self.save_best_weights(self.U.detach())
        else:
            if self.best_U is None:
                self.best_U = torch.empty(self.U.shape, dtype=self.U.dtype, pin_memory=self.U.is_cuda)
            self.best_U.copy_(self.U.detach())
        self.best_is_current = False

    def remove_unneeded_best_files(self) -> None:
        """The best-weights files that the checkpoint on disk does not name (a job's written since its
        last checkpoint, when it is stopped; a killed one's, when it starts again): a resumption
        starts from the checkpoint and has no use for them."""
        if self.run.checkpoint is None:
            return
        for path in self.run.best_weights_files():
            if path != self.checkpointed_best_file:
                path.unlink(missing_ok=True)

    def save_best_weights(self, weights: torch.Tensor) -> None:
        """Write the best epoch's U to its best-weights file, atomically; the file of an earlier
        best epoch goes, unless the checkpoint on disk still names it."""
        with atomic_path(self.run.best_weights_file(self.best_epoch)) as tmp:
            torch.save({"fingerprint": self.run.fingerprint, "epoch": self.best_epoch, "U": weights}, tmp)
        earlier, self.best_U_saved_epoch = self.best_U_saved_epoch, self.best_epoch
        if (
            earlier not in (None, self.best_epoch)
            and self.run.best_weights_file(earlier) != self.checkpointed_best_file
        ):
            self.run.best_weights_file(earlier).unlink(missing_ok=True)

    def checkpoint_payload(self) -> dict:
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "fingerprint": self.run.fingerprint,
            "epoch": self.epoch,
            "U": self.U,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "objective": self.objective.state_dict(),
            "history": self.history,
            "best_ndcg": self.best_ndcg,
            "best_epoch": self.best_epoch,
            "best_U_file": None if self.best_is_current else self.run.best_weights_file(self.best_epoch).name,
            "best_item_weights": self.best_item_weights,
            "epochs_without_improvement": self.epochs_without_improvement,
            "stopped": self.stopped,
        }

    def checkpoint_due(self) -> bool:
        """After an epoch: once the run's `checkpoint_every_epochs` epochs and
        `checkpoint_min_seconds` seconds have passed since the last checkpoint (or the start).
        Never after the last epoch, which the model file follows at once: a job killed before that
        file is written repeats its last epochs from the checkpoint before, to the same result."""
        if self.run.checkpoint is None or self.stopped or self.epoch >= self.settings.epochs:
            return False
        epoch, seconds = self.last_checkpoint
        return (
            self.epoch - epoch >= self.run.checkpoint_every_epochs
            and checkpoint_clock() - seconds >= self.run.checkpoint_min_seconds
        )

    def save_checkpoint(self) -> None:
        """The checkpoint holds U, the optimizer and everything else that changes every epoch; the
        best epoch's U, once U has moved past it, goes to a file of its own, written only when the
        best epoch changes (on the CPU already when U moved past it). Files of earlier best epochs
        are removed after the checkpoint that no longer needs them is in place, so a kill at any
        moment leaves a consistent pair."""
        if self.run.checkpoint is None:
            return
        started = time.perf_counter()
        if not self.best_is_current and self.best_U_saved_epoch != self.best_epoch:
            self.save_best_weights(self.best_U)
        # SIGTERM waits while the new checkpoint is put in place and recorded: the epoch that a
        # terminated job names for its resumption (TrainingTerminated) is then the one it finds.
        with ExitStack() as held:
            with atomic_path(self.run.checkpoint) as tmp:
                torch.save(self.checkpoint_payload(), tmp)
                held.enter_context(sigterm_held())
            self.checkpointed_best_file = None if self.best_is_current else self.run.best_weights_file(self.best_epoch)
            self.remove_unneeded_best_files()
            self.last_checkpoint = (self.epoch, checkpoint_clock())
            self.run.log.info(
                "checkpoint after epoch %d written to %s (%.1f s)",
                self.epoch,
                self.run.checkpoint,
                time.perf_counter() - started,
            )

    def resume(self) -> None:
        path = self.run.checkpoint
        if path is None or not Path(path).exists():
            return
        log = self.run.log
        try:  # mapped, not read: U and its momentum are copied out of it, one at a time
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            log.warning("not resuming from %s: it cannot be read (%s); starting over", path, error)
            return
        if saved.get("checkpoint_version") != CHECKPOINT_VERSION:
            log.warning("not resuming from %s: it was written by another version of this code; starting over", path)
            return
        if saved.get("fingerprint") != self.run.fingerprint:
            log.warning(
                "not resuming from %s: it was written for other hyperparameters, code or input files; starting over",
                path,
            )
            return
        best_U, best_file = None, None
        if saved["best_U_file"] is not None:
            best_file = Path(path).with_name(saved["best_U_file"])
            try:  # mapped: with `best_in_file` its U stays in the file, read at the end
                best = torch.load(best_file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:
                log.warning(
                    "not resuming from %s: its best epoch's %s cannot be read (%s); starting over",
                    path,
                    best_file,
                    error,
                )
                return
            if best.get("fingerprint") != self.run.fingerprint or best.get("epoch") != saved["best_epoch"]:
                log.warning("not resuming from %s: %s belongs to another run or epoch; starting over", path, best_file)
                return
            best_U = None if self.best_in_file else best["U"].clone()
        with torch.no_grad():
            self.U.copy_(saved["U"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"].cpu())
        self.objective.load_state_dict(saved["objective"])
        self.epoch = saved["epoch"]
        self.history = saved["history"]
        self.best_ndcg = saved["best_ndcg"]
        self.best_epoch = saved["best_epoch"]
        self.best_is_current = best_file is None
        self.best_U = best_U
        self.best_U_saved_epoch = None if best_file is None else self.best_epoch
        self.checkpointed_best_file = best_file
        self.best_item_weights = (
            None if saved["best_item_weights"] is None else saved["best_item_weights"].cpu().clone()
        )
        self.epochs_without_improvement = saved["epochs_without_improvement"]
        self.stopped = saved["stopped"]
        log.info(
            "resuming from %s after epoch %d (best %.5f at epoch %s)", path, self.epoch, self.best_ndcg, self.best_epoch
        )


def train(data: TrainingData, hyperparameters: dict, run: TrainingRun, objective: Objective) -> Fitted:
    """Train U under `objective` and return the best epoch's U (by validation NDCG@100)."""
    return Trainer(data, hyperparameters, run, objective).fit()
