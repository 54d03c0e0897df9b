"""X·U, the product behind every prediction and score: each kernel of itemitem.PRODUCT_KERNELS
against torch.sparse.mm bit for bit and against a float64 product, and training and validation
under either kernel giving the same model to the bit (POSIT's `topk` tie rule reads exact ties)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import method_of, sgd_methods
from semtail import training
from semtail.models import itemitem
from semtail.models.base import TrainingRun
from semtail.models.itemitem import predict, to_torch_csr
from semtail.models.synthetic import power_law_interactions, training_data
from semtail.registry import method_module

DEVICES = [
    torch.device("cpu"),
    pytest.param(torch.device("cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
]


def binary_rows(n_rows: int, n_items: int, seed: int) -> sp.csr_matrix:
    """Heavy-tailed binary rows, with an empty row and a row holding every item."""
    rows = power_law_interactions(n_rows, n_items, 40, seed=seed).tolil()
    rows[3, :] = 0
    rows[5, :] = 1
    return sp.csr_matrix(rows, dtype=np.float32)


def wide_range_matrix(n_items: int, seed: int) -> torch.Tensor:
    """Entries of both signs over six orders of magnitude, so that the order of the sums shows."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = 10 ** (torch.rand(n_items, n_items, generator=generator) * 6 - 3)
    return torch.randn(n_items, n_items, generator=generator) * magnitude


@pytest.mark.parametrize("device", DEVICES)
def test_each_kernel_is_the_product_in_float64_within_float32_rounding(device):
    rows = binary_rows(60, 700, seed=1)
    matrix = wide_range_matrix(700, seed=2)
    expected = rows.toarray().astype(np.float64) @ matrix.double().numpy()
    # A sum of n float32 terms is within about n·eps of the sum of their magnitudes.
    bound = 2 * 700 * np.finfo(np.float32).eps * (rows.toarray() @ matrix.abs().double().numpy())
    for kernel in ("rows", "sparse_mm"):
        product = predict(to_torch_csr(rows, device), matrix.to(device), kernel).cpu().double().numpy()
        assert np.all(np.abs(product - expected) <= bound), kernel
        assert np.abs(product - expected).max() > 0  # the bound is what is tested, not exactness


def test_on_the_cpu_the_rows_kernel_is_sparse_mm_to_the_bit():
    rows = to_torch_csr(binary_rows(200, 1500, seed=3))
    matrix = wide_range_matrix(1500, seed=4)
    by_rows, by_sparse_mm = predict(rows, matrix, "rows"), predict(rows, matrix, "sparse_mm")
    assert torch.equal(by_rows, by_sparse_mm)
    assert torch.equal(predict(rows.to_dense(), matrix, "rows"), by_sparse_mm)  # dense rows are taken too
    assert torch.equal(by_rows[3], torch.zeros(1500))  # the empty row
    assert itemitem.PRODUCT_KERNELS == {"cpu": "rows", "cuda": "sparse_mm"}  # each device's kernel, pinned
    assert torch.equal(predict(rows, matrix), by_rows)  # the CPU's kernel by default


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown product kernel 'dense'"):
        predict(torch.eye(3), torch.eye(3), "dense")


@pytest.mark.parametrize("name", ["ease", "ipw", "cvar", "posit", "posit_mlp"])
def test_training_under_either_kernel_gives_the_same_model_to_the_bit(name, monkeypatch):
    """Every step's predictions, the POSIT signal's ties and the validation NDCG behind early
    stopping are computed by the kernel: equal models mean equal values all along."""
    method = method_of(name)
    data = training_data(160, 60, 8, 40, seed=5)
    hyperparameters = sgd_methods(batch_size=32, epochs=3)[name]
    models = {}
    for kernel in ("rows", "sparse_mm"):
        monkeypatch.setitem(itemitem.PRODUCT_KERNELS, "cpu", kernel)
        models[kernel] = method_module(method).fit(data, hyperparameters, TrainingRun("toy", method, 0))
    rows, sparse_mm = models["rows"], models["sparse_mm"]
    assert torch.equal(rows.state["U"], sparse_mm.state["U"]) and rows.state["U"].abs().max() > 0
    assert [entry[training.VALIDATION_METRIC] for entry in rows.history] == [
        entry[training.VALIDATION_METRIC] for entry in sparse_mm.history
    ]
    if rows.item_weights is not None:
        assert torch.equal(rows.item_weights, sparse_mm.item_weights)
