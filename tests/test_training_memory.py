"""Training's memory: U's gradient computed and applied a block of rows at a time on the CPU, and
the best epoch's U kept in the run's best-weights file beside the checkpoint, so that training
holds U and its momentum (2 items × items matrices), where it held 5 (also the whole gradient, a
host copy of the best epoch's U and a last copy of it to return); without a checkpoint, 3 (the
host copy).

The results must not change, so the step as it was before (`TodaysTrainer`: the whole gradient
in U.grad, one sparse product X_bᵀ·G, its diagonal zeroed, `torch.optim.SGD(fused=True)` stepping
U and the objective's parameters together, the best copy on the host) is carried here, and U is
compared with it bit for bit, not to float32 rounding: the blocks only split the same arithmetic,
each entry of X_bᵀ·G summed over the same users in the same order and each entry of U stepped by
the same fused kernel, so any difference at all would be a changed result."""

import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from method_settings import completed, sgd_methods
from semtail import training
from semtail.models.base import TrainingRun
from semtail.models.itemitem import predict
from semtail.models.synthetic import training_data
from semtail.registry import method_module

N_ITEMS = 200
BLOCK_ROWS = 24  # 200 items: 8 blocks of 24 rows and one of 8 (blocks hold multiples of 8 rows here)
DATA = training_data(150, N_ITEMS, 8, 40, seed=2)
# The tests' table, with steps large enough that five epochs move U far from where it starts.
HYPERPARAMETERS = {
    method: {**values, "lr": 0.05, "wd": 1e-3}
    for method, values in sgd_methods(batch_size=32, epochs=5).items()
    if method in ("ease", "cvar", "posit")
}


class TodaysTrainer(training.Trainer):
    """The step before the change (2026-12-06), and the best epoch's U in a host copy, written to
    its file only with a checkpoint."""

    def __init__(self, *args):
        super().__init__(*args)
        self.best_in_file = False

    def step(self, rows, loss_sums, nonfinite):
        with torch.no_grad():
            predictions = predict(rows, self.U)
        predictions.requires_grad_(True)
        losses = self.objective.batch_losses(predictions, rows.to_dense(), rows)
        total = sum(losses.values())
        self.objective.zero_grad(set_to_none=True)
        total.backward()
        if self.U.grad is None:
            self.U.grad = torch.zeros_like(self.U)
        torch.addmm(self.U.grad, rows.t().to_sparse_csr(), predictions.grad, beta=0, out=self.U.grad)
        self.U.grad.diagonal().zero_()
        self.optimizer.step()
        with torch.no_grad():
            for name, value in losses.items():
                loss_sums[name] = loss_sums.get(name, 0) + value.detach()
            return nonfinite | ~torch.isfinite(total.detach())

    def best_weights(self):
        best = self.U if self.best_is_current else self.best_U
        return best.detach().to("cpu", copy=True)


@pytest.fixture
def blocks(monkeypatch):
    monkeypatch.setattr(training, "GRADIENT_BLOCK_BYTES", 4 * N_ITEMS * BLOCK_ROWS)


def trainer(method, trainer_class, monkeypatch, **run_options):
    module = method_module(method)
    monkeypatch.setattr(
        module,
        "train",
        lambda data, hyperparameters, run, objective: trainer_class(data, hyperparameters, run, objective),
    )
    return module.fit(DATA, completed(method, HYPERPARAMETERS[method]), TrainingRun("toy", method, 0, **run_options))


def fit(method, trainer_class, monkeypatch, validation=None, **run_options):
    if validation is not None:
        scripted = iter(validation)
        monkeypatch.setattr(training, "validation_ndcg", lambda *args, **kwargs: next(scripted))
    return trainer(method, trainer_class, monkeypatch, **run_options).fit()


def identical_models(a, b):
    assert torch.equal(a.state["U"], b.state["U"])
    assert a.best_epoch == b.best_epoch
    assert (a.item_weights is None) == (b.item_weights is None)
    if a.item_weights is not None:
        assert torch.equal(a.item_weights, b.item_weights)
    without_time = [{k: v for k, v in entry.items() if k != "seconds"} for entry in a.history]
    assert without_time == [{k: v for k, v in entry.items() if k != "seconds"} for entry in b.history]


def test_gradient_blocks_fit_the_budget_and_start_where_a_vector_would():
    # 2**27 bytes / (4 · 41,140) = 815.6 rows; 41,140 = 4 · 10,285, so 16 rows hold a multiple of 64 entries
    assert training.gradient_block_rows(41_140, torch.device("cpu")) == 800
    assert training.gradient_block_rows(20_108, torch.device("cpu")) == 1_664  # 20,108 = 4 · 5,027: 16 rows; 1,668.7
    assert training.gradient_block_rows(1_682, torch.device("cpu")) == 1_682  # the demo: one block
    assert training.gradient_block_rows(3_000_001, torch.device("cpu")) == 64  # at least one aligned block
    assert training.gradient_block_rows(41_140, torch.device("cuda")) == 41_140


@pytest.mark.parametrize("method", list(HYPERPARAMETERS))
def test_each_step_gives_todays_U_and_momentum_bit_for_bit(method, blocks, monkeypatch):
    new, today = trainer(method, training.Trainer, monkeypatch), trainer(method, TodaysTrainer, monkeypatch)
    assert new.gradient.shape == (BLOCK_ROWS, N_ITEMS) and new.U.grad is None
    for start in range(0, 150 - 32, 32):
        for one in (new, today):
            one.step(one.train_rows.rows(start, start + 32), {}, torch.zeros((), dtype=torch.bool))
        assert torch.equal(new.U, today.U)
        assert torch.equal(
            new.optimizer.state[new.U]["momentum_buffer"], today.optimizer.state[today.U]["momentum_buffer"]
        )
        for a, b in zip(new.objective.parameters(), today.objective.parameters()):
            assert torch.equal(a, b)
    assert new.U.abs().max() > 1e-2  # the steps moved U
    assert torch.equal(new.U.diagonal(), torch.zeros(N_ITEMS))


# The best epoch: an earlier one (its copy is returned), and the last (U itself is); the copy in
# the best-weights file (with a checkpoint) and on the host (without).
@pytest.mark.parametrize("checkpointed", [True, False])
@pytest.mark.parametrize("validation", [[0.1, 0.3, 0.2, 0.25, 0.15], [0.1, 0.2, 0.3, 0.4, 0.5]])
@pytest.mark.parametrize("method", list(HYPERPARAMETERS))
def test_training_gives_todays_model(method, validation, checkpointed, blocks, monkeypatch, tmp_path):
    options = {"checkpoint": tmp_path / "checkpoint.pt", "fingerprint": "job"} if checkpointed else {}
    new = fit(method, training.Trainer, monkeypatch, validation, **options)
    today = fit(method, TodaysTrainer, monkeypatch, validation)
    identical_models(new, today)
    assert new.best_epoch == validation.index(max(validation)) + 1


@pytest.mark.parametrize("method", ["ease", "posit"])
def test_resuming_from_a_checkpoint_of_todays_code_gives_todays_model(method, blocks, monkeypatch, tmp_path):
    """A checkpoint after epoch 3, with the best epoch (2) in its own file, resumed by the new code."""
    validation = [0.1, 0.3, 0.2, 0.25, 0.15]
    uninterrupted = fit(method, TodaysTrainer, monkeypatch, validation)

    class Interrupted(Exception):
        pass

    def interrupt(epoch, U):
        if epoch == 3:
            raise Interrupted

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        fit(
            method,
            TodaysTrainer,
            monkeypatch,
            validation,
            checkpoint=checkpoint,
            fingerprint="job",
            after_epoch=interrupt,
        )
    assert (tmp_path / "checkpoint.pt.best-epoch2").exists()
    resumed = fit(method, training.Trainer, monkeypatch, validation[3:], checkpoint=checkpoint, fingerprint="job")
    identical_models(uninterrupted, resumed)
    assert resumed.best_epoch == 2


def test_the_best_epoch_goes_to_its_file_as_U_moves_past_it_and_serves_the_checkpoint(blocks, monkeypatch, tmp_path):
    """Epoch:       1    2    3    4    5      (a checkpoint after epoch 3 only)
    validation:  0.1  0.3  0.2  0.4  0.35   (best: 1, 2, 2, 4, 4)
    Each best epoch's U is written when the next epoch starts, once; an earlier one is removed then,
    unless the checkpoint on disk names it (epoch 2's, until a later checkpoint). The model is read
    from the last one."""
    checkpoint = tmp_path / "checkpoint.pt"
    seen = {}

    def look(epoch, U):
        files = {path.suffix[1:]: path.stat().st_mtime_ns for path in tmp_path.glob("checkpoint.pt.best-epoch*")}
        named = torch.load(checkpoint, weights_only=True)["best_U_file"] if checkpoint.exists() else None
        seen[epoch] = (files, named, U.clone())

    validation = [0.1, 0.3, 0.2, 0.4, 0.35]
    fitted = fit(
        "posit",
        training.Trainer,
        monkeypatch,
        validation,
        checkpoint=checkpoint,
        fingerprint="job",
        checkpoint_every_epochs=3,
        after_epoch=look,
    )
    assert [sorted(seen[epoch][0]) for epoch in range(1, 6)] == [
        [],
        ["best-epoch1"],
        ["best-epoch2"],
        ["best-epoch2"],
        ["best-epoch2", "best-epoch4"],
    ]
    assert [seen[epoch][1] for epoch in range(1, 6)] == [None, None] + ["checkpoint.pt.best-epoch2"] * 3
    assert seen[3][0]["best-epoch2"] == seen[5][0]["best-epoch2"]  # written once, before the checkpoint
    for epoch in (2, 4):
        saved = torch.load(tmp_path / f"checkpoint.pt.best-epoch{epoch}", weights_only=True)
        assert (saved["fingerprint"], saved["epoch"]) == ("job", epoch) and torch.equal(saved["U"], seen[epoch][2])
    assert fitted.best_epoch == 4 and torch.equal(fitted.state["U"], seen[4][2])
    identical_models(fitted, fit("posit", TodaysTrainer, monkeypatch, validation))


def file_mapped(address: int) -> bool:
    """Whether the address lies in a mapping of a file (/proc/self/maps: a pathname and an inode),
    whose pages the kernel can drop and read again, rather than in the process's own memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, _, _, _, inode, *path = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in span.split("-"))
        if start <= address < end:
            return inode != "0" and bool(path) and not path[0].startswith("[")
    return False


class ItemItemMatrices(TorchDispatchMode):
    """Every tensor of at least items² entries that an operator returns in storage not seen before,
    and the most of those storages alive at once in the process's own memory (a storage dies with
    its last tensor; one mapped from a file is not counted)."""

    def __init__(self):
        super().__init__()
        self.storages: list[weakref.ref] = []
        self.operators: list[str] = []
        self.mapped: list[bool] = []
        self.most_alive = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(result)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided and tensor.numel() >= N_ITEMS**2:
                storage = tensor.untyped_storage()
                if not any(seen() is storage for seen in self.storages):
                    self.storages.append(weakref.ref(storage))
                    self.operators.append(str(func.overloadpacket.__name__))
                    self.mapped.append(file_mapped(storage.data_ptr()))
                    alive = [seen() is not None and not mapped for seen, mapped in zip(self.storages, self.mapped)]
                    self.most_alive = max(self.most_alive, sum(alive))
        return result


# Best epoch 2 of 5: its U is kept while U moves on, and returned.
@pytest.mark.parametrize(
    ("trainer_class", "checkpointed", "most_alive", "operators"),
    [
        # U, its momentum; at the end, after both are let go, the best epoch's U read from its file
        (training.Trainer, True, 2, ["zeros", "empty_like", "set_"]),
        # U, its momentum and the best epoch's copy on the host, returned as it is
        (training.Trainer, False, 3, ["zeros", "empty_like", "empty"]),
        # before: also the whole gradient, and a copy of the best epoch's copy to return
        (TodaysTrainer, False, 5, ["zeros", "zeros_like", "empty_like", "empty", "_to_copy"]),
    ],
)
def test_training_holds_two_item_item_matrices_with_a_checkpoint(
    trainer_class, checkpointed, most_alive, operators, blocks, monkeypatch, tmp_path
):
    options = {"checkpoint": tmp_path / "checkpoint.pt", "fingerprint": "job"} if checkpointed else {}
    with ItemItemMatrices() as matrices:
        fitted = fit("posit", trainer_class, monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.15], **options)
    assert fitted.best_epoch == 2
    assert (matrices.most_alive, matrices.operators) == (most_alive, operators)
    assert any(seen() is fitted.state["U"].untyped_storage() for seen in matrices.storages)


def test_a_resumed_training_holds_two_item_item_matrices_too(blocks, monkeypatch, tmp_path):
    """The checkpoint after epoch 3 (best epoch 2, in its file) is mapped, not read: U and the
    momentum are copied out of it into matrices of their own, the best epoch's U stays in its file
    until the end, and the model is that of a training never interrupted."""
    validation = [0.1, 0.3, 0.2, 0.25, 0.15]
    checkpoint = tmp_path / "checkpoint.pt"

    class Interrupted(Exception):
        pass

    def interrupt(epoch, U):
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(
            "posit",
            training.Trainer,
            monkeypatch,
            validation,
            checkpoint=checkpoint,
            fingerprint="job",
            after_epoch=interrupt,
        )
    with ItemItemMatrices() as matrices:
        resumed = fit("posit", training.Trainer, monkeypatch, validation[3:], checkpoint=checkpoint, fingerprint="job")
    # U; the checkpoint's U and momentum, mapped; the best epoch's U, mapped to check its file; the
    # momentum's own copy; the best epoch's U, read at the end
    assert matrices.operators == ["zeros", "set_", "set_", "set_", "_to_copy", "set_"]
    assert matrices.mapped == [False, True, True, True, False, False]
    assert matrices.most_alive == 2
    identical_models(resumed, fit("posit", TodaysTrainer, monkeypatch, validation))


def test_a_best_weights_file_gone_before_the_end_is_named(blocks, monkeypatch, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"

    def remove_best_file(epoch, U):
        if epoch == 5:
            (tmp_path / "checkpoint.pt.best-epoch2").unlink()

    with pytest.raises(
        RuntimeError,
        match=r"toy/posit seed 0: the best epoch's U cannot be read back from .*checkpoint\.pt\.best-epoch2",
    ):
        fit(
            "posit",
            training.Trainer,
            monkeypatch,
            [0.1, 0.3, 0.2, 0.25, 0.15],
            checkpoint=checkpoint,
            fingerprint="job",
            after_epoch=remove_best_file,
        )
