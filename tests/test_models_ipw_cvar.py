"""IPW's weights and loss; CVaR's threshold converging to the (1 − β) quantile of the entry losses."""

import math

import numpy as np
import pytest
import torch

from semtail.models import cvar, ipw


def test_ipw_weights_formula():
    popularity = np.array([1, 4, 10, 0, 4])
    alpha = 0.3
    raw = [math.exp(-alpha * n) for n in popularity]
    expected = [r / (sum(raw) / len(raw)) for r in raw]
    weights = ipw.inverse_popularity_weights(popularity, alpha)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    assert weights.mean().item() == pytest.approx(1.0, rel=1e-6)


def test_ipw_weights_do_not_underflow_and_alpha_zero_is_uniform():
    weights = ipw.inverse_popularity_weights(np.array([50_000, 60_000, 70_000]), 0.01)
    # exp(-500) underflows in float32; the ratios e^-100 and e^-200 are what matter
    assert weights[0].item() == pytest.approx(3.0, rel=1e-6) and weights[1] > 0
    assert torch.equal(ipw.inverse_popularity_weights(np.array([1, 9, 3]), 0.0), torch.ones(3))


def test_ipw_loss_is_the_weighted_mean_of_item_losses():
    predictions = torch.tensor([[0.5, 0.0, 2.0], [1.0, 1.0, 0.0]])
    interactions = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    weights = torch.tensor([0.5, 1.0, 1.5])
    objective = ipw.InversePopularityObjective(weights, lam=2.0)
    # ℓ = 1000 · mean over users of squared errors: item 0: (0.25 + 1)/2, item 1: 0, item 2: (1 + 0)/2
    item_losses = [1000 * 0.625, 0.0, 1000 * 0.5]
    expected = 2.0 * (0.5 * item_losses[0] + 1.0 * item_losses[1] + 1.5 * item_losses[2]) / 3
    assert objective.batch_losses(predictions, interactions)["loss"].item() == pytest.approx(expected)


def test_cvar_loss_hand_computed():
    objective = cvar.TailObjective(lam=0.5, beta=0.25, alr=0.1)
    with torch.no_grad():
        objective.threshold.fill_(0.2)
    predictions = torch.tensor([[0.0, 0.5], [1.0, 0.9]])
    interactions = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    squared = [1.0, 0.25, 0.0, 0.81]
    expected = 1000 * 0.5 * np.mean([0.2 + max(e - 0.2, 0) / 0.25 for e in squared])
    assert objective.batch_losses(predictions, interactions)["loss"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.3])
def test_cvar_threshold_converges_to_the_quantile_with_the_learner_frozen(beta):
    """With U fixed (no learner step), SGD on a alone finds the (1 − β) quantile of the entry losses."""
    generator = torch.Generator().manual_seed(0)
    interactions = (torch.rand(400, 60, generator=generator) < 0.2).float()
    predictions = torch.rand(400, 60, generator=generator) * 0.8  # a fixed, imperfect model
    entry_losses = (predictions - interactions).square().flatten().numpy()
    objective = cvar.TailObjective(lam=1.0, beta=beta, alr=2e-6)
    optimizer = torch.optim.SGD(objective.parameters(), lr=objective.alr)
    for _ in range(1500):
        rows = torch.randint(0, 400, (64,), generator=generator)
        optimizer.zero_grad()
        objective.batch_losses(predictions[rows], interactions[rows])["loss"].backward()
        optimizer.step()
    # the quantile is only defined up to the gap between neighbouring losses, and a jitters by alr · 1000/β
    quantile = np.quantile(entry_losses, 1 - beta)
    assert objective.threshold.item() == pytest.approx(quantile, abs=0.01)
    assert (entry_losses > objective.threshold.item()).mean() == pytest.approx(beta, abs=0.02)


def test_cvar_threshold_is_in_the_optimizer_with_its_own_learning_rate_and_no_momentum():
    objective = cvar.TailObjective(lam=1.0, beta=0.5, alr=0.123)
    (group,) = objective.parameter_groups()
    assert group["params"] == [objective.threshold] and group["lr"] == 0.123
    assert objective.epoch_statistics() == {"threshold_a": 0.0}
