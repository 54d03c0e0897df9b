"""The item-item model behind EASE and its SGD variants.

A user's scores are their interaction row times an items × items matrix whose diagonal is 0,
x̂_u = x_u · U, so that no item predicts itself. Training losses are built from the per-item
reconstruction loss on a batch of users b:

    ℓ_i = 1000 · mean_{u ∈ b} (x̂_ui − x_ui)²
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

RECONSTRUCTION_SCALE = 1000.0

# Sparse CSR tensors are stable enough for the products used here; the notice adds nothing to logs.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def to_torch_csr(matrix: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on `device` (int64 indices, float32 values)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data),
        size=matrix.shape,
        device=device,
        check_invariants=False,  # scipy's CSR is valid by construction
    )


# The kernel of X · M per device type: "rows" (`embedding_bag`: each output row the sum of M's rows
# at the row's entries, times their values) or "sparse_mm" (`torch.sparse.mm` on CSR). On binary rows
# the two give bit-identical results on the CPU, where "rows" is 2-3 times faster
# (benchmarks/README.md); on CUDA, sparse_mm stays until a GPU measurement says otherwise
# (benchmarks/train_benchmark.py times both).
PRODUCT_KERNELS = {"cpu": "rows", "cuda": "sparse_mm"}


def predict(rows: torch.Tensor, matrix: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
    """x̂ = X · M for a batch of interaction rows, sparse CSR or dense, as a dense tensor, by the
    kernel of `PRODUCT_KERNELS` for M's device unless `kernel` names one."""
    if rows.layout == torch.strided:
        rows = rows.to_sparse_csr()
    kernel = kernel or PRODUCT_KERNELS.get(matrix.device.type, "sparse_mm")
    if kernel == "rows":
        return torch.nn.functional.embedding_bag(
            rows.col_indices(),
            matrix,
            rows.crow_indices(),
            mode="sum",
            per_sample_weights=rows.values().to(matrix.dtype),
            include_last_offset=True,
        )
    if kernel == "sparse_mm":
        return torch.sparse.mm(rows, matrix)
    raise ValueError(f"unknown product kernel {kernel!r} (known: rows, sparse_mm)")


def reconstruction_loss_per_item(predictions: torch.Tensor, interactions: torch.Tensor) -> torch.Tensor:
    """ℓ_i = 1000 · mean over the batch's users of (x̂_ui − x_ui)², one value per item."""
    return PerItemSquaredError.apply(predictions, interactions)


class PerItemSquaredError(torch.autograd.Function):
    """ℓ_i with its gradient written out, ∂ℓ_i/∂x̂_ui = 2000 · (x̂_ui − x_ui) / |b|.

    Autograd through the formula would keep several batch × items tensors for the backward pass;
    this keeps the residual only, which makes eight fewer reads or writes of such a tensor per step
    (each 82 MB at the ML-20M shape, 1.3 GB at MSD's)."""

    @staticmethod
    def forward(ctx, predictions: torch.Tensor, interactions: torch.Tensor) -> torch.Tensor:
        residual = predictions - interactions
        ctx.save_for_backward(residual)
        return residual.square().sum(dim=0) * (RECONSTRUCTION_SCALE / residual.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_per_item: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        (residual,) = ctx.saved_tensors
        grad = residual * (grad_per_item * (2 * RECONSTRUCTION_SCALE / residual.shape[0]))
        return grad, (-grad if ctx.needs_input_grad[1] else None)


def matrix_scorer(matrix: torch.Tensor, device: torch.device):
    """Scores of fold-in rows under an item-item matrix, computed on `device`."""
    weights = matrix.to(device=device, dtype=torch.float32)

    def score(fold_in: torch.Tensor) -> torch.Tensor:
        return predict(fold_in.to(device=device, dtype=torch.float32), weights)

    return score


def zero_diagonal_(matrix: torch.Tensor) -> torch.Tensor:
    matrix.diagonal().zero_()
    return matrix
