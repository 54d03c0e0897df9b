"""POSIT: signal, accumulators and adversary loss against hand-computed values; the adversary."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from semtail.models import TrainingData, posit
from semtail.models.synthetic import power_law_interactions

HYPERPARAMETERS = {
    "lr": 0.01, "wd": 0.0, "batch_size": 8, "epochs": 1, "patience": 1, "lam": 1.0, "alr": 1.0, "nstd": 1.5,
    "awd": 0.0, "adversary": "2mlp2", "signal": "recall", "ones_aware": False, "k": 2, "signal_momentum": 0.9,
}  # fmt: skip

PREDICTIONS = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1]])
INTERACTIONS = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])


def test_recall_signal_by_hand():
    # top-2: user 0 -> items {0, 2}, user 1 -> items {1, 2}; hits: user 0 item 0, user 1 items 1 and 2
    recall = posit.recall_signal(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall")
    assert recall.tolist() == [1.0, 1.0, 1.0, 0.0]
    # recall_dist divides by min(k, |x_u|) = min(2, 3) = 2 for both users
    assert posit.recall_signal(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall_dist").tolist() == [0.5, 0.5, 0.5, 0.0]
    # a user with fewer positives than k: min(k, |x_u|) = 1
    one = posit.recall_signal(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([[0.0, 1.0, 0.0]]).to_sparse_csr(), 2, "recall_dist")
    assert one.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="signal"):
        posit.recall_signal(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "ndcg")


def test_ties_at_the_cut_share_the_remaining_slots():
    predictions = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    membership = posit.top_k_membership(predictions, 2)
    expected = [[1.0, 1 / 3, 1 / 3, 1 / 3, 0.0], [0.4] * 5]
    np.testing.assert_allclose(membership.numpy(), expected, rtol=1e-6)
    assert membership.sum(dim=1).tolist() == pytest.approx([2.0, 2.0])
    # the signal sees the same shares, at the users' positives only
    positives = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 1.0]])
    signal = posit.recall_signal(predictions, positives.to_sparse_csr(), 2, "recall")
    np.testing.assert_allclose(signal.numpy(), (membership * positives).sum(dim=0).numpy(), rtol=1e-6)


def test_recall_signal_matches_a_dense_computation():
    generator = torch.Generator().manual_seed(3)
    predictions = torch.round(torch.rand(40, 30, generator=generator) * 10) / 10  # with ties
    interactions = (torch.rand(40, 30, generator=generator) < 0.3).float()
    for signal, k in [("recall", 5), ("recall_dist", 5), ("recall_dist", 50)]:
        dense = posit.top_k_membership(predictions, k) * interactions
        if signal == "recall_dist":
            dense = dense / interactions.sum(dim=1, keepdim=True).clamp(min=1, max=k)
        got = posit.recall_signal(predictions, interactions.to_sparse_csr(), k, signal)
        np.testing.assert_allclose(got.numpy(), dense.sum(dim=0).numpy(), rtol=1e-5, atol=1e-6)


def test_accumulators_and_adversary_loss_by_hand():
    S, C = torch.zeros(4), torch.zeros(4)
    posit.accumulate_(S, C, posit.recall_signal(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall"), torch.full((4,), 2.0), 0.9)
    assert S.tolist() == [-1.0, -1.0, -1.0, 0.0] and C.tolist() == [2.0] * 4
    # a second batch of one user, whose top-2 are items 3 and 2, both positives
    second = posit.recall_signal(
        torch.tensor([[0.1, 0.2, 0.3, 0.4]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]).to_sparse_csr(), 2, "recall"
    )
    posit.accumulate_(S, C, second, torch.ones(4), 0.9)
    np.testing.assert_allclose(S.numpy(), [-0.9, -0.9, -1.9, -1.0], rtol=1e-6)
    np.testing.assert_allclose(C.numpy(), [2.8] * 4, rtol=1e-6)

    ratios = [s / 2.8 for s in (-0.9, -0.9, -1.9, -1.0)]
    scale = sum(abs(r) for r in ratios) / 4
    advantage = [r / scale for r in ratios]
    np.testing.assert_allclose(posit.normalised_advantage(S, C).numpy(), advantage, rtol=1e-5)

    weights = torch.tensor([0.5, 1.0, 1.5, 1.0], requires_grad=True)
    loss = posit.adversary_loss(weights, S, C)
    expected = -sum(w * a for w, a in zip([0.5, 1.0, 1.5, 1.0], advantage)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # dA/dw̄_i = −L̃_i / n: the loss pushes weight off the well-served items
    np.testing.assert_allclose(weights.grad.numpy(), [-a / 4 for a in advantage], rtol=1e-5)


def test_ones_aware_counts_and_unseen_items():
    S, C = torch.zeros(3), torch.zeros(3)
    interactions = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    signal = posit.recall_signal(torch.tensor([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]]), interactions.to_sparse_csr(), 1, "recall")
    posit.accumulate_(S, C, signal, interactions.sum(dim=0), 0.9)
    assert S.tolist() == [-2.0, 0.0, 0.0] and C.tolist() == [2.0, 1.0, 0.0]
    # item 2 was never seen (C = 0): its ratio is 0, not NaN
    advantage = posit.normalised_advantage(S, C)
    assert advantage.tolist() == pytest.approx([-3.0, 0.0, 0.0])
    assert posit.normalised_advantage(torch.zeros(3), torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("architecture", ["linear", "2mlp2", "2bmlp3", "2mlp50"])
def test_adversary_starts_uniform_and_learns(architecture):
    X = power_law_interactions(60, 20, 5, seed=1)
    adversary = posit.Adversary(architecture, 60, nstd=1.5)
    adversary.initialize(torch.Generator().manual_seed(0))
    columns = posit.ItemColumns(X, torch.device("cpu"))
    weights = posit.normalise(adversary(columns))
    assert weights.shape == (20,)
    np.testing.assert_allclose(weights.detach().numpy(), 1.0, rtol=1e-6)
    (weights * torch.arange(20.0)).mean().backward()
    assert adversary.first.grad.abs().sum() > 0


def test_sparse_first_layer_matches_a_dense_linear_layer():
    X = power_law_interactions(30, 12, 4, seed=2)
    columns = posit.ItemColumns(X, torch.device("cpu"))
    weight = torch.randn(30, 3, requires_grad=True, generator=torch.Generator().manual_seed(0))
    dense_weight = weight.detach().clone().requires_grad_(True)
    upstream = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    (columns.times(weight) * upstream).sum().backward()
    (torch.from_numpy(X.T.toarray()) @ dense_weight * upstream).sum().backward()
    np.testing.assert_allclose(weight.grad.numpy(), dense_weight.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_architecture_is_an_error():
    with pytest.raises(ValueError, match="2mlp"):
        posit.Adversary("3mlp2", 10, 1.0)


@pytest.mark.parametrize("value", ["false", 0, None])
def test_ones_aware_must_be_a_boolean(value):
    X = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="ones_aware: .* is not true or false"):
        objective_for(X, ones_aware=value)


def objective_for(X: sp.csr_matrix, **changes) -> posit.AdversarialObjective:
    data = TrainingData(train=X, validation_tr=X, validation_te=X)
    objective = posit.AdversarialObjective(data, {**HYPERPARAMETERS, **changes}, torch.device("cpu"))
    objective.initialize(torch.Generator().manual_seed(0))
    return objective


@pytest.mark.parametrize("architecture", ["linear", "2mlp2", "2bmlp2"])
def test_weights_rise_on_under_served_items(architecture):
    """Users 0-99 like items 0-9, users 100-199 items 10-19; the learner always ranks items 0-9
    first, so items 10-19 are never recalled. The adversary moves weight onto items 10-19."""
    generator = torch.Generator().manual_seed(0)
    likes = torch.rand(200, 20, generator=generator) < 0.3
    likes[:100, 10:] = False
    likes[100:, :10] = False
    X = sp.csr_matrix(likes.float().numpy())
    objective = objective_for(X, adversary=architecture, k=10, alr=0.002 if architecture == "linear" else 1.0)
    optimizer = torch.optim.SGD(objective.parameter_groups())
    served_first = torch.cat([torch.linspace(2, 1, 10), torch.linspace(0.5, 0, 10)])
    interactions = torch.from_numpy(X.toarray())
    for step in range(30):
        rows = torch.randint(0, 200, (32,), generator=generator)
        predictions = served_first.expand(32, -1).clone().requires_grad_(True)
        losses = objective.batch_losses(predictions, interactions[rows])
        optimizer.zero_grad()
        losses["adversary_loss"].backward()
        optimizer.step()
    weights = objective.item_weights()
    assert weights.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert weights[10:].min() > 1.0 > weights[:10].max()


def test_learner_loss_uses_detached_weights():
    X = power_law_interactions(40, 10, 4, seed=4)
    objective = objective_for(X)
    predictions = torch.rand(5, 10, requires_grad=True, generator=torch.Generator().manual_seed(0))
    losses = objective.batch_losses(predictions, torch.from_numpy(X[:5].toarray()))
    grads = torch.autograd.grad(losses["loss"], list(objective.adversary.parameters()), allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads)
    (prediction_grad,) = torch.autograd.grad(losses["adversary_loss"], [predictions], allow_unused=True)
    assert prediction_grad is None
    # with uniform weights (w̄ = 1) the learner loss is λ · mean_i ℓ_i, EASE's loss
    expected = 1000 * (predictions - torch.from_numpy(X[:5].toarray())).square().mean()
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_batch_norm_is_torch_batch_norm_over_items_without_running_statistics():
    z = torch.randn(25, 3, generator=torch.Generator().manual_seed(0)) * 4 + 2
    reference = torch.nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    torch.testing.assert_close(posit.batch_norm(z), reference(z))
    reference.eval()  # no running statistics: the same in evaluation mode
    torch.testing.assert_close(posit.batch_norm(z), reference(z))


def test_the_learner_uses_the_weights_of_the_previous_minibatch():
    """Minibatch t's learner loss is weighted by the w̄ that the adversary's forward gave at t−1
    (uniform before the first), not by the forward after the adversary's update."""
    X = power_law_interactions(40, 10, 4, seed=5)
    # the linear adversary keeps moving after its first step (the MLPs barely do: see posit.py)
    objective = objective_for(X, adversary="linear", alr=0.01)
    optimizer = torch.optim.SGD(objective.parameter_groups())
    interactions = torch.from_numpy(X[:6].toarray())
    predictions = torch.rand(6, 10, generator=torch.Generator().manual_seed(1))
    per_item = 1000 * (predictions - interactions).square().mean(dim=0)
    forwards = []
    for step in range(3):
        losses = objective.batch_losses(predictions.clone().requires_grad_(True), interactions)
        used = torch.ones(10) if step == 0 else forwards[-1]
        assert losses["loss"].item() == pytest.approx((used * per_item).mean().item(), rel=1e-5)
        forwards.append(objective.item_weights())  # the forward this minibatch made, before the update
        optimizer.zero_grad()
        (losses["loss"] + losses["adversary_loss"]).backward()
        optimizer.step()
    assert not torch.allclose(forwards[1], objective.item_weights())  # the adversary did move


@pytest.mark.parametrize("architecture", ["2mlp2", "2mlp50", "2bmlp2"])
def test_mlp_adversary_collapses_on_its_first_step_the_linear_one_does_not(architecture):
    """A property of the adversary as specified (first layer at 0, BatchNorm without affine part),
    derived by hand: on the first step every BatchNorm sees zero variance, so the gradient reaching
    the first layer is multiplied by 1/sqrt(eps) once per BatchNorm, and each hidden unit's column
    gets the same direction, scaled by its second-layer weight. The first layer becomes rank one
    and huge; BatchNorm's scale invariance then leaves later steps almost no effect on the weights."""
    X = power_law_interactions(200, 40, 8, seed=2)
    objective = objective_for(X, adversary=architecture, alr=1.0, k=5)
    linear = objective_for(X, adversary="linear", alr=1.0, k=5)
    rows = [torch.from_numpy(X[i : i + 20].toarray()) for i in range(0, 200, 20)]
    scores = torch.Generator().manual_seed(3)
    weights = {"mlp": [], "linear": []}
    for batch in rows:
        predictions = torch.rand(batch.shape, generator=scores)
        for name, player in (("mlp", objective), ("linear", linear)):
            optimizer = torch.optim.SGD(player.parameter_groups())
            losses = player.batch_losses(predictions.clone().requires_grad_(True), batch)
            optimizer.zero_grad()
            losses["adversary_loss"].backward()
            optimizer.step()
            weights[name].append(player.item_weights())
    first = objective.adversary.first.detach()
    singular = torch.linalg.svdvals(first)
    assert singular[0] > 1e3 and singular[1] < 1e-5 * singular[0]
    moved = lambda w: ((w[-1] - w[0]).norm() / (w[0] - 1).norm()).item()  # noqa: E731
    assert (weights["mlp"][0] - 1).abs().max() > 0.1  # the first step set the weights
    assert moved(weights["mlp"]) < 1e-3  # nine more steps hardly changed them
    assert moved(weights["linear"]) > 1e-2  # a linear adversary keeps learning
