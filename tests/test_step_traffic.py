"""What one training step does with items × items tensors, recorded op by op.

The step's cost on a GPU is its traffic over U-sized tensors (benchmarks/README.md): the floor is
the fused SGD update of U, which reads U, its gradient and its momentum and writes U and the
momentum. Besides that, a step should only read U in X_b·U and write U's gradient once in X_bᵀ·G
(on the CPU a block of rows at a time, each block then stepped by the fused SGD: one pass still).
A U-sized temporary (autograd through U, `U - lr * grad`, a dense X_bᵀ) would add a pass and,
on ML-20M, 1.6 GB of device memory against the 8 GiB budget. These tests record every operator
a step dispatches and check which U-sized storages each one touches, under each kernel of X_b·U
that semtail.models.itemitem.PRODUCT_KERNELS may give a device (which one each device has is
pinned in test_product.py)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from method_settings import method_of, sgd_methods
from semtail import training
from semtail.models import itemitem
from semtail.models.base import TrainingRun
from semtail.models.synthetic import training_data
from semtail.registry import method_module
from semtail.training import Trainer, validation_ndcg

CPU = torch.device("cpu")
N_ITEMS = 240
BATCH = 48  # batch × items must differ from items², or batch-sized tensors would look U-sized
DATA = training_data(180, N_ITEMS, 12, 40, seed=3)
DEVICES = [
    torch.device("cpu"),
    pytest.param(torch.device("cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
]
HYPERPARAMETERS = sgd_methods(batch_size=BATCH, epochs=2)
# The operator that reads U in X·U, per product kernel (under no_grad, as training and scoring run it).
PRODUCT_OPERATORS = {"rows": "_embedding_bag_forward_only", "sparse_mm": "_sparse_addmm"}
VIEWS = {"diagonal", "slice"}  # operators that return a view: no traffic


class UTraffic(TorchDispatchMode):
    """For each dispatched operator that touches a tensor of at least items² elements or a block
    of a known one: its name, the known storages it touches, and whether it returned an unknown (new)
    U-sized storage."""

    def __init__(self, known: dict[int, str]):
        super().__init__()
        self.known = known
        self.calls: list[tuple[str, frozenset[str], bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and self.is_big(t)]
        outputs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor) and self.is_big(t)]
        if inputs or outputs:
            touched = frozenset(self.name(t) for t in inputs + outputs)
            new_storage = any(self.name(t) == "new" for t in outputs)
            self.calls.append((str(func.overloadpacket.__name__), touched, new_storage))
        return result

    def is_big(self, tensor: torch.Tensor) -> bool:
        """U-sized, or a block of a known storage (larger than a diagonal, which is no pass over U)."""
        if tensor.layout != torch.strided:
            return False
        return tensor.numel() >= N_ITEMS * N_ITEMS or (tensor.numel() > N_ITEMS and self.name(tensor) != "new")

    def name(self, tensor: torch.Tensor) -> str:
        return self.known.get(tensor.untyped_storage().data_ptr(), "new")


def trainer_for(name, monkeypatch, device=CPU) -> Trainer:
    method = method_of(name)
    module = method_module(method)
    monkeypatch.setattr(
        module, "train", lambda data, hyperparameters, run, objective: Trainer(data, hyperparameters, run, objective)
    )
    return module.fit(DATA, HYPERPARAMETERS[name], TrainingRun("toy", method, 0, device=device))


def storages(trainer: Trainer) -> dict[int, str]:
    momentum = trainer.optimizer.state[trainer.U]["momentum_buffer"]
    return {
        trainer.U.untyped_storage().data_ptr(): "U",
        trainer.gradient.untyped_storage().data_ptr(): "gradient",
        momentum.untyped_storage().data_ptr(): "momentum",
    }


def one_step(trainer: Trainer, start: int) -> None:
    nonfinite = torch.zeros((), dtype=torch.bool, device=trainer.device)
    trainer.step(trainer.train_rows.rows(start, start + BATCH), {}, nonfinite)


def test_every_kernel_a_device_has_is_recorded_here():
    assert set(itemitem.PRODUCT_KERNELS.values()) <= set(PRODUCT_OPERATORS)


@pytest.mark.parametrize("kernel", list(PRODUCT_OPERATORS))
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_a_step_reads_U_once_writes_its_gradient_once_and_updates_in_the_fused_sgd(name, device, kernel, monkeypatch):
    monkeypatch.setitem(itemitem.PRODUCT_KERNELS, device.type, kernel)
    trainer = trainer_for(name, monkeypatch, device)
    one_step(trainer, 0)  # the first step creates the momentum buffer
    with UTraffic(storages(trainer)) as traffic:
        one_step(trainer, BATCH)

    assert not any(new for _, _, new in traffic.calls), traffic.calls
    passes = [touched for name, touched, _ in traffic.calls if name not in VIEWS]
    assert passes == [{"U"}, {"gradient"}, {"U", "gradient", "momentum"}], traffic.calls
    assert traffic.calls[0][0] == PRODUCT_OPERATORS[kernel]
    assert traffic.calls[-1][0] == "_fused_sgd_"


@pytest.mark.parametrize("name", ["ease", "posit_mlp"])
def test_on_the_cpu_each_block_of_the_gradient_is_written_once_and_stepped_once(name, monkeypatch):
    monkeypatch.setattr(training, "GRADIENT_BLOCK_BYTES", 4 * N_ITEMS * 64)  # 240 rows: 64, 64, 64, 48
    trainer = trainer_for(name, monkeypatch)
    assert trainer.gradient.shape == (64, N_ITEMS)
    one_step(trainer, 0)
    with UTraffic(storages(trainer)) as traffic:
        one_step(trainer, BATCH)

    assert not any(new for _, _, new in traffic.calls), traffic.calls
    passes = [(name, touched) for name, touched, _ in traffic.calls if name not in VIEWS]
    block = [("addmm", {"gradient"}), ("_fused_sgd_", {"U", "gradient", "momentum"})]
    assert passes[1:] == 4 * block, traffic.calls
    assert passes[0][1] == {"U"}


@pytest.mark.parametrize("kernel", list(PRODUCT_OPERATORS))
@pytest.mark.parametrize("device", DEVICES)
def test_a_validation_pass_reads_U_and_allocates_nothing_of_its_size(device, kernel, monkeypatch):
    monkeypatch.setitem(itemitem.PRODUCT_KERNELS, device.type, kernel)
    trainer = trainer_for("posit_mlp", monkeypatch, device)
    one_step(trainer, 0)
    with UTraffic(storages(trainer)) as traffic:
        validation_ndcg(trainer.U, trainer.validation_fold_in, trainer.validation_heldout)

    assert traffic.calls, "the validation pass should read U"
    assert all(touched == {"U"} and not new for _, touched, new in traffic.calls), traffic.calls
    assert {name for name, _, _ in traffic.calls} == {PRODUCT_OPERATORS[kernel]}


def test_the_recorder_sees_a_U_sized_temporary(monkeypatch):
    """The check above can fail: an unfused update of U, as autograd-style code would write it."""
    trainer = trainer_for("ease", monkeypatch)
    one_step(trainer, 0)
    with UTraffic(storages(trainer)) as traffic, torch.no_grad():
        trainer.U.copy_(trainer.U - 0.1 * trainer.gradient)
    assert any(new for _, _, new in traffic.calls)
    assert [touched for _, touched, _ in traffic.calls][0] == {"gradient", "new"}
