"""Closed-form EASE against float64 numpy, and SGD EASE converging to it."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import completed
from semtail import registry
from semtail.models import ease, ease_closed
from semtail.models.base import TrainingData, TrainingRun
from semtail.models.itemitem import reconstruction_loss_per_item
from semtail.models.synthetic import power_law_interactions
from semtail.training import Trainer


def numpy_ease(X: np.ndarray, l2: float) -> np.ndarray:
    gram = X.T.astype(np.float64) @ X.astype(np.float64)
    P = np.linalg.inv(gram + l2 * np.eye(X.shape[1]))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


@pytest.fixture(scope="module")
def interactions():
    return power_law_interactions(200, 40, 8, exponent=0.8, seed=3)


def test_closed_form_matches_float64_numpy(interactions):
    B = ease_closed.closed_form(interactions, 25.0, torch.device("cpu"))
    assert B.dtype == torch.float32
    expected = numpy_ease(interactions.toarray(), 25.0)
    np.testing.assert_allclose(B.numpy(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert torch.all(B.diagonal() == 0)


def test_gram_matrix_is_exact_in_blocks(interactions, monkeypatch):
    monkeypatch.setattr(ease_closed, "GRAM_BLOCK_ENTRIES", 3 * interactions.shape[0])  # 3 columns a block
    gram = ease_closed.gram_matrix(interactions, torch.device("cpu"))
    dense = interactions.toarray().astype(np.int64)
    np.testing.assert_array_equal(gram.numpy(), dense.T @ dense)


def test_closed_form_logs_its_progress(interactions, monkeypatch, caplog):
    monkeypatch.setattr(ease_closed, "GRAM_BLOCK_ENTRIES", 16 * interactions.shape[0])  # 40 items: blocks of 16, 16, 8
    monkeypatch.setattr(ease_closed, "PROGRESS_SECONDS", 0.0)  # every block
    with caplog.at_level("INFO", logger="semtail.models.ease_closed"):
        ease_closed.closed_form(interactions, 25.0, torch.device("cpu"))
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(",")[0] for m in messages[:2]] == ["XᵀX: 16 of 40 item columns", "XᵀX: 32 of 40 item columns"]
    assert messages[2].startswith("XᵀX: 40 item columns in ")
    assert messages[3].startswith("Cholesky factorisation of the 40 × 40 Gram matrix")
    assert messages[4].startswith("inverse from the Cholesky factor") and messages[5].startswith("B from the inverse")
    assert len(messages) == 6


def test_closed_form_satisfies_the_optimality_condition(interactions):
    """For each column j: (XᵀX + λI) b_j = XᵀX e_j − μ_j e_j (a Lagrange multiplier only on row j)."""
    l2 = 25.0
    B = ease_closed.closed_form(interactions, l2, torch.device("cpu")).double().numpy()
    X = interactions.toarray().astype(np.float64)
    residual = (X.T @ X + l2 * np.eye(X.shape[1])) @ B - X.T @ X
    off_diagonal = residual - np.diag(np.diag(residual))
    assert np.abs(off_diagonal).max() < 1e-3


def test_sgd_ease_approaches_closed_form_with_matching_regularisation():
    """The SGD loss 1000/(N·n)·‖X − XU‖² with weight decay wd (= a (wd/2)‖U‖² penalty) has the
    minimiser of ‖X − XU‖² + λ‖U‖² for λ = wd·N·n/2000. Full-batch steps remove SGD noise."""
    n_users, n_items = 80, 12
    X = power_law_interactions(n_users, n_items, 4, exponent=0.5, seed=5)
    l2 = 5.0
    wd = 2000 * l2 / (n_users * n_items)
    data = TrainingData(train=X, validation_tr=X[:20], validation_te=X[20:40])
    hyperparameters = {"lr": 0.008, "wd": wd, "batch_size": n_users, "epochs": 200, "patience": 200, "drop_last": False}
    trainer = Trainer(data, hyperparameters, TrainingRun("synthetic", "ease", 0), ease.ReconstructionObjective())
    trainer.fit()
    U = trainer.U.double().numpy()
    expected = numpy_ease(X.toarray(), l2)
    assert np.all(np.diag(U) == 0)
    assert np.abs(U - expected).max() < 1e-3 * np.abs(expected).max()
    # and the regularisation matters: a different λ is far away
    assert np.abs(U - numpy_ease(X.toarray(), 4 * l2)).max() > 0.05 * np.abs(expected).max()


def test_ease_closed_refuses_a_non_positive_l2():
    with pytest.raises(
        registry.HyperparameterError, match="hyperparameters.ease_closed.l2: 0.0 must be greater than 0"
    ):
        completed("ease_closed", {"l2": 0.0})


def test_ease_closed_at_a_tiny_l2_names_l2():
    """Two items with the same users make XᵀX singular; 1e-300 added to its diagonal changes nothing
    in float64, so the Cholesky factorisation fails."""
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=np.float32))
    data = TrainingData(train=X, validation_tr=X[:2], validation_te=X[2:])
    with pytest.raises(ValueError) as caught:
        ease_closed.fit(data, {"l2": 1e-300}, TrainingRun("toy", "ease_closed", 0))
    message = str(caught.value)
    assert message.startswith("toy/ease_closed seed 0: XᵀX + l2·I cannot be inverted in float64 at l2 = 1e-300")
    assert "Set a larger `l2` for ease_closed" in message


def test_per_item_loss_by_hand_and_its_gradient_against_finite_differences():
    generator = torch.Generator().manual_seed(5)
    predictions = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    interactions = (torch.rand(6, 4, generator=generator) < 0.4).double()
    expected = 1000 * ((predictions.numpy() - interactions.numpy()) ** 2).mean(axis=0)
    np.testing.assert_allclose(reconstruction_loss_per_item(predictions, interactions).numpy(), expected, rtol=1e-12)
    assert torch.autograd.gradcheck(
        reconstruction_loss_per_item, (predictions.requires_grad_(), interactions.requires_grad_()), eps=1e-6
    )
