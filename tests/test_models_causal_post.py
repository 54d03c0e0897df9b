"""Causal (popularity deconfounding) and Post (a post-hoc popularity penalty), our definitions of
the paper's two undefined baselines: PD's prediction and gradient against a case worked by hand,
SGD steps against numpy, inference without the popularity factor; Post with γ = 0 giving its
base's lists exactly."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import completed
from semtail import evaluate as ev
from semtail import training
from semtail.models import causal, post
from semtail.models.base import TrainingData, TrainingRun
from semtail.models.synthetic import training_data
from semtail.train_job import train_and_save

DATA = training_data(150, 30, 6, 40, seed=0)
SGD = {"lr": 0.5, "wd": 0.01, "batch_size": 32, "epochs": 3, "patience": 3, "drop_last": False}

# Two users, three items; scores on both sides of 0, training counts 4, 1, 2 (m = 1, 1/4, 1/2).
SCORES = [[-1.0, 0.0, 0.5], [2.0, -0.5, 1.0]]
INTERACTIONS = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
COUNTS = np.array([4, 1, 2])
GAMMA = 0.5


def test_elu_prime_and_the_popularity_factor_by_hand():
    z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert causal.elu_prime(z).tolist() == pytest.approx([math.exp(-2), math.exp(-0.5), 1.0, 1.5, 4.0])
    assert causal.popularity_factor(COUNTS, 0.5).tolist() == pytest.approx([1.0, 0.5, math.sqrt(0.5)])
    assert causal.popularity_factor(np.array([4, 1, 0]), 0.0).tolist() == [1.0, 1.0, 1.0]  # 0^0 = 1
    assert causal.popularity_factor(np.array([4, 1, 0]), 2.0).tolist() == [1.0, 0.0625, 0.0]


def test_pd_prediction_loss_and_gradient_against_a_hand_computed_case():
    f = [1.0, 0.5, math.sqrt(0.5)]  # m_i^γ
    # ŷ = ELU′(x̂)·f by hand: ELU′(−1) = e^−1, ELU′(0) = 1, ELU′(0.5) = 1.5, ELU′(2) = 3, ELU′(−0.5) = e^−0.5, ELU′(1) = 2
    y_hat = [[math.exp(-1) * f[0], 1.0 * f[1], 1.5 * f[2]], [3.0 * f[0], math.exp(-0.5) * f[1], 2.0 * f[2]]]
    # ℓ_i = 1000 · mean over the 2 users of (ŷ − x)², the loss the mean over the 3 items
    per_item = [1000 * sum((y_hat[u][i] - INTERACTIONS[u][i]) ** 2 for u in range(2)) / 2 for i in range(3)]
    # ∂loss/∂x̂_ui = (1/3) · 1000 · 2 (ŷ − x) / 2 · f_i · ELU″(x̂_ui), ELU″ = e^z for z ≤ 0, 1 above
    slope = [[math.exp(-1), math.exp(0.0), 1.0], [1.0, math.exp(-0.5), 1.0]]
    gradient = [
        [1000 * (y_hat[u][i] - INTERACTIONS[u][i]) * f[i] * slope[u][i] / 3 for i in range(3)] for u in range(2)
    ]

    objective = causal.DeconfoundedObjective(causal.popularity_factor(COUNTS, GAMMA).double())
    predictions = torch.tensor(SCORES, dtype=torch.float64, requires_grad=True)
    loss = objective.batch_losses(predictions, torch.tensor(INTERACTIONS, dtype=torch.float64))["loss"]
    loss.backward()
    assert loss.item() == pytest.approx(sum(per_item) / 3, rel=1e-6)
    np.testing.assert_allclose(predictions.grad.numpy(), gradient, rtol=1e-6)

    # the same through autograd on the formula, in float32 as training runs, away from x̂ = 0 (where
    # autograd through the clamp in elu_prime takes the slope as 0, and U, starting at 0, would never move)
    away_from_zero = [[score or 0.25 for score in row] for row in SCORES]
    z = torch.tensor(away_from_zero, requires_grad=True)
    factor = causal.popularity_factor(COUNTS, GAMMA)
    plain = (1000 * (causal.elu_prime(z) * factor - torch.tensor(INTERACTIONS)).square().mean(dim=0)).mean()
    plain.backward()
    z32 = torch.tensor(away_from_zero, requires_grad=True)
    causal.DeconfoundedObjective(factor).batch_losses(z32, torch.tensor(INTERACTIONS))["loss"].backward()
    torch.testing.assert_close(z32.grad, z.grad)


def numpy_pd_steps(
    X: np.ndarray, batches, factor: np.ndarray, lr: float, wd: float, momentum: float = 0.9
) -> np.ndarray:
    """U after SGD steps on mean_i ℓ_i of PD's prediction, in float64 from the formulas: the
    gradient's diagonal dropped, weight decay added, momentum starting at the first gradient."""
    n_items = X.shape[1]
    U = np.zeros((n_items, n_items))
    buffer = None
    for start, stop in batches:
        Xb = X[start:stop]
        z = Xb @ U
        positive = np.where(z > 0, z + 1, np.exp(np.minimum(z, 0)))
        slope = np.where(z > 0, 1.0, positive) * factor[None, :]
        residual = positive * factor[None, :] - Xb
        gradient = Xb.T @ (2 * 1000 * residual * slope / (len(Xb) * n_items))
        np.fill_diagonal(gradient, 0.0)
        gradient += wd * U
        buffer = gradient if buffer is None else momentum * buffer + gradient
        U = U - lr * buffer
    return U


def test_causal_training_steps_match_sgd_on_the_loss_written_out(monkeypatch):
    monkeypatch.setattr(
        causal,
        "train",
        lambda data, hyperparameters, run, objective: training.Trainer(data, hyperparameters, run, objective),
    )
    trainer = causal.fit(DATA, completed("causal", {**SGD, "gamma": 0.7}), TrainingRun("toy", "causal", 0))
    batches = [(0, 32), (32, 64), (64, 96), (96, 128)]
    for start, stop in batches:
        trainer.step(trainer.train_rows.rows(start, stop), {}, torch.zeros((), dtype=torch.bool))
    X = DATA.train.toarray().astype(np.float64)
    factor = (X.sum(axis=0) / X.sum(axis=0).max()) ** 0.7
    expected = numpy_pd_steps(X, batches, factor, lr=SGD["lr"], wd=SGD["wd"])
    scores = X[:64] @ expected
    assert (scores > 0).any() and (scores < 0).any()  # both sides of ELU′ were exercised
    np.testing.assert_allclose(trainer.U.double().numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_causal_recommends_without_the_popularity_factor():
    hyperparameters = completed("causal", {**SGD, "lr": 0.05, "gamma": 1.0})
    fitted = causal.fit(DATA, hyperparameters, TrainingRun("toy", "causal", 0))
    fold_in = torch.from_numpy(DATA.validation_tr.toarray())
    scores = causal.scorer(fitted.state, hyperparameters, torch.device("cpu"))(fold_in)
    U = fitted.state["U"].double().numpy()
    np.testing.assert_allclose(scores.numpy(), fold_in.double().numpy() @ U, rtol=1e-5, atol=1e-6)
    trained_prediction = causal.elu_prime(scores) * causal.popularity_factor(DATA.popularity(), 1.0)
    assert not torch.equal(scores.argsort(dim=1), trained_prediction.argsort(dim=1))


def split_files(folder):
    for name in ("train", "validation_tr", "validation_te"):
        sp.save_npz(folder / f"{name}.npz", getattr(DATA, name))
    return {name: str(folder / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")}


def test_post_with_gamma_zero_returns_its_base_lists_exactly(tmp_path):
    inputs = split_files(tmp_path)
    job = dict(dataset="toy", seed=0, device=torch.device("cpu"), environment={"device": "cpu"}, code_version="test")
    train_and_save(
        method="ease", hyperparameters=SGD | {"lr": 0.002}, inputs=inputs, output=tmp_path / "ease.pt", **job
    )
    for gamma in (0.0, 0.05):
        train_and_save(
            method="post",
            variant=f"post{gamma}",
            hyperparameters={"base": "ease", "gamma": gamma},
            inputs={**inputs, "base_model": str(tmp_path / "ease.pt")},
            output=tmp_path / f"post{gamma}.pt",
            **job,
        )
    split = ev.Split(DATA.train, DATA.validation_tr, DATA.validation_te)
    settings = {"ks": [5, 10], "coverage_block_size": 20, "tail_interaction_share": 0.2, "batch_size": 16}
    base_record, base = ev.evaluate_model_file(tmp_path / "ease.pt", split, settings, torch.device("cpu"))
    _, same = ev.evaluate_model_file(tmp_path / "post0.0.pt", split, settings, torch.device("cpu"))
    penalised_record, penalised = ev.evaluate_model_file(tmp_path / "post0.05.pt", split, settings, torch.device("cpu"))
    assert same.lists.keys() == base.lists.keys()
    for key in base.lists:
        np.testing.assert_array_equal(same.lists[key], base.lists[key])
    assert same.metrics == base.metrics
    assert not np.array_equal(penalised.lists["top_k"], base.lists["top_k"])
    assert penalised_record["metrics"]["arp@10"] < base_record["metrics"]["arp@10"]  # less popular items


def test_post_needs_a_base_that_scores_by_an_item_item_matrix():
    train = sp.csr_matrix(np.eye(3, dtype=np.float32))
    mostpop = {
        "dataset": "toy",
        "method": "mostpop",
        "variant": "mostpop",
        "seed": 0,
        "n_items": 3,
        "state": {"popularity": torch.ones(3)},
    }
    with pytest.raises(ValueError, match="'mostpop' is a mostpop run, which does not score by an item–item matrix"):
        post.fit(
            TrainingData(train, train, train, base_model=mostpop),
            completed("post", {"base": "mostpop", "gamma": 0.1}),
            TrainingRun("toy", "post", 0),
        )
    wrong_seed = {**mostpop, "method": "ease", "variant": "ease", "seed": 1, "state": {"U": torch.eye(3)}}
    with pytest.raises(ValueError, match="expected"):
        post.fit(
            TrainingData(train, train, train, base_model=wrong_seed),
            completed("post", {"base": "ease", "gamma": 0.1}),
            TrainingRun("toy", "post", 0),
        )
