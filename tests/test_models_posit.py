"""POSIT: signal, accumulators and adversary loss against hand-computed values; the adversary."""

import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from method_settings import completed
from semtail import registry
from semtail.models import posit
from semtail.models.base import TrainingData, TrainingRun
from semtail.models.synthetic import power_law_interactions

HYPERPARAMETERS = {
    "lr": 0.01,
    "wd": 0.0,
    "batch_size": 8,
    "epochs": 1,
    "patience": 1,
    "drop_last": False,
    "alr": 1.0,
    "nstd": 1.5,
    "adversary": "2mlp2",
    "signal": "recall",
    "k": 2,
    "ties": "share",
}

PREDICTIONS = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1]])
INTERACTIONS = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])


def test_recall_signal_by_hand():
    # top-2: user 0 -> items {0, 2}, user 1 -> items {1, 2}; hits: user 0 item 0, user 1 items 1 and 2
    recall = posit.recall_signal_share(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall")
    assert recall.tolist() == [1.0, 1.0, 1.0, 0.0]
    # recall_dist divides by min(k, |x_u|) = min(2, 3) = 2 for both users
    assert posit.recall_signal_share(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall_dist").tolist() == [
        0.5,
        0.5,
        0.5,
        0.0,
    ]
    # a user with fewer positives than k: min(k, |x_u|) = 1
    one = posit.recall_signal_share(
        torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([[0.0, 1.0, 0.0]]).to_sparse_csr(), 2, "recall_dist"
    )
    assert one.tolist() == [0.0, 1.0, 0.0]
    # the signal functions are public: an unknown signal is an error, not recall computed silently
    with pytest.raises(ValueError, match="unknown POSIT signal 'ndcg'"):
        posit.recall_signal_share(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "ndcg")
    with pytest.raises(ValueError, match="unknown POSIT signal 'ndcg'"):
        posit.recall_signal_topk(PREDICTIONS, INTERACTIONS, 2, "ndcg")


def test_ties_at_the_cut_share_the_remaining_slots():
    predictions = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    membership = posit.top_k_membership(predictions, 2)
    expected = [[1.0, 1 / 3, 1 / 3, 1 / 3, 0.0], [0.4] * 5]
    np.testing.assert_allclose(membership.numpy(), expected, rtol=1e-6)
    assert membership.sum(dim=1).tolist() == pytest.approx([2.0, 2.0])
    # the signal sees the same shares, at the users' positives only
    positives = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 1.0]])
    signal = posit.recall_signal_share(predictions, positives.to_sparse_csr(), 2, "recall")
    np.testing.assert_allclose(signal.numpy(), (membership * positives).sum(dim=0).numpy(), rtol=1e-6)


def test_recall_signal_matches_a_dense_computation():
    generator = torch.Generator().manual_seed(3)
    predictions = torch.round(torch.rand(40, 30, generator=generator) * 10) / 10  # with ties
    interactions = (torch.rand(40, 30, generator=generator) < 0.3).float()
    for signal, k in [("recall", 5), ("recall_dist", 5), ("recall_dist", 50)]:
        dense = posit.top_k_membership(predictions, k) * interactions
        if signal == "recall_dist":
            dense = dense / interactions.sum(dim=1, keepdim=True).clamp(min=1, max=k)
        got = posit.recall_signal_share(predictions, interactions.to_sparse_csr(), k, signal)
        np.testing.assert_allclose(got.numpy(), dense.sum(dim=0).numpy(), rtol=1e-5, atol=1e-6)


def test_accumulators_and_adversary_loss_by_hand():
    S, C = torch.zeros(4), torch.zeros(4)
    posit.accumulate_(
        S,
        C,
        posit.recall_signal_share(PREDICTIONS, INTERACTIONS.to_sparse_csr(), 2, "recall"),
        torch.full((4,), 2.0),
        0.9,
    )
    assert S.tolist() == [-1.0, -1.0, -1.0, 0.0] and C.tolist() == [2.0] * 4
    # a second batch of one user, whose top-2 are items 3 and 2, both positives
    second = posit.recall_signal_share(
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
    signal = posit.recall_signal_share(
        torch.tensor([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]]), interactions.to_sparse_csr(), 1, "recall"
    )
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
    with pytest.raises(ValueError, match="adversary '3mlp2' is not linear, 2mlpN or 2bmlpN"):
        posit.Adversary("3mlp2", 10, 1.0)


ARCHITECTURE_EXAMPLES = [
    "linear",
    "2mlp1",
    "2mlp2",
    "2mlp10",
    "2mlp50",
    "2bmlp1",
    "2bmlp3",
    "2bmlp128",
    "2mlp2\n",
    "2mlp0",
    "2mlp05",
    "2mlp",
    "2bmlp",
    "2bbmlp2",
    "3mlp2",
    "2cmlp2",
    "mlp2",
    "1mlp2",
    "linear2",
    "Linear",
    "LINEAR",
    "2MLP2",
    "2mlp-1",
    "2mlp2.5",
    " linear",
    "linear ",
    "2mlp 2",
    "",
    "linear|2mlp2",
    "2mlp2\n\n",
]


def test_the_adversary_pattern_and_the_architecture_parser_accept_the_same_strings():
    """The declaration's pattern (a literal, which the config check applies) and ARCHITECTURE
    (which Adversary parses with) say the same thing twice."""
    spec = registry.declaration("posit").hyperparameters["adversary"]
    declared = {name for name in ARCHITECTURE_EXAMPLES if registry.value_problem(spec, name) is None}
    parsed = {name for name in ARCHITECTURE_EXAMPLES if posit.ARCHITECTURE.match(name)}
    assert declared == parsed
    assert {name.strip() for name in parsed} == {
        "linear",
        "2mlp1",
        "2mlp2",
        "2mlp10",
        "2mlp50",
        "2bmlp1",
        "2bmlp3",
        "2bmlp128",
    }


@pytest.mark.parametrize("value", ["false", 0, None])
def test_ones_aware_must_be_a_boolean(value):
    X = sp.csr_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(
        registry.HyperparameterError,
        match=f"hyperparameters.posit.ones_aware: {re.escape(repr(value))} is not a boolean",
    ):
        objective_for(X, ones_aware=value)


def objective_for(X: sp.csr_matrix, **changes) -> posit.AdversarialObjective:
    data = TrainingData(train=X, validation_tr=X, validation_te=X)
    objective = posit.AdversarialObjective(
        data, completed("posit", {**HYPERPARAMETERS, **changes}), torch.device("cpu")
    )
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
    for _ in range(30):
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


# -- the authors' tie rule, their adversary initialisation, and one that keeps learning ----------


def authors_signal(predictions: torch.Tensor, interactions: torch.Tensor, k: int, signal: str) -> torch.Tensor:
    """The authors' per-item signal, written out as their code computes it: a users × items matrix
    that is zero except at the k positions torch.topk picks in each row of the batch, where it holds
    x_ui (recall), or (x_ui + 1e-8) / (min(k, Σ_i x_ui) + 1e-8) (recall_dist); then a sum over users."""
    slots = predictions.topk(k, dim=-1).indices
    contributions = torch.zeros_like(predictions)
    for user in range(predictions.shape[0]):
        for item in slots[user].tolist():
            x = interactions[user, item].item()
            if signal == "recall":
                contributions[user, item] = x
            else:
                contributions[user, item] = (x + 1e-8) / (min(k, interactions[user].sum().item()) + 1e-8)
    return contributions.sum(dim=0)


@pytest.mark.parametrize("signal", ["recall", "recall_dist"])
def test_topk_rule_is_the_authors_computation(signal):
    generator = torch.Generator().manual_seed(7)
    predictions = torch.round(torch.rand(12, 40, generator=generator) * 4) / 4  # many ties at the cut
    predictions[:3] = 0.0  # rows where every score ties, as on the first minibatch
    interactions = (torch.rand(12, 40, generator=generator) < 0.3).float()
    interactions[0] = 0.0
    interactions[0, :2] = 1.0  # fewer positives than k
    for k in (1, 5, 60):
        expected = authors_signal(predictions, interactions, min(k, 40), signal)
        got = posit.recall_signal_topk(predictions, interactions, k, signal)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-12)


def test_topk_rule_by_hand_with_the_authors_epsilon():
    # top-2 of (0.9, 0.1, 0.5, 0.3) is items 0 and 2; item 2 is not a positive, min(k, |x_u|) = 2
    got = posit.recall_signal_topk(PREDICTIONS[:1], INTERACTIONS[:1], 2, "recall_dist")
    np.testing.assert_allclose(got.numpy(), [(1 + 1e-8) / (2 + 1e-8), 0.0, 1e-8 / (2 + 1e-8), 0.0], rtol=1e-6)
    assert posit.recall_signal_topk(PREDICTIONS, INTERACTIONS, 2, "recall").tolist() == [1.0, 1.0, 1.0, 0.0]


def test_on_a_tied_batch_topk_serves_k_items_where_share_serves_all():
    """U = 0: every score ties. The authors' rule gives every user the same k slots (whichever
    torch.topk returns); sharing gives each item k/n of a slot."""
    predictions = torch.zeros(6, 50)
    interactions = torch.ones(6, 50)
    topk = posit.recall_signal_topk(predictions, interactions, 10, "recall")
    chosen = predictions[0].topk(10).indices
    assert sorted(topk.nonzero().flatten().tolist()) == sorted(chosen.tolist())
    assert topk[chosen].tolist() == [6.0] * 10
    shared = posit.recall_signal_share(predictions, interactions.to_sparse_csr(), 10, "recall")
    np.testing.assert_allclose(shared.numpy(), 6 * 10 / 50, rtol=1e-6)


def test_the_objective_uses_the_configured_tie_rule():
    X = sp.csr_matrix(np.ones((8, 30), dtype=np.float32))
    interactions = torch.from_numpy(X.toarray())
    for ties, expected in (
        ("topk", posit.recall_signal_topk(torch.zeros(8, 30), interactions, 2, "recall")),
        ("share", posit.recall_signal_share(torch.zeros(8, 30), X_as_csr(X), 2, "recall")),
    ):
        objective = objective_for(X, ties=ties)
        objective.batch_losses(torch.zeros(8, 30, requires_grad=True), interactions)
        np.testing.assert_allclose(objective.S.numpy(), -expected.numpy(), rtol=1e-6)
    with pytest.raises(
        registry.HyperparameterError, match="hyperparameters.posit.ties: 'random' is not one of topk, share"
    ):
        objective_for(X, ties="random")


def X_as_csr(X: sp.csr_matrix) -> torch.Tensor:
    return torch.from_numpy(X.toarray()).to_sparse_csr()


def test_initialisations():
    adversary = posit.Adversary("2mlp3", 400, nstd=1.0)
    adversary.initialize(torch.Generator().manual_seed(0), "authors")
    assert adversary.first.abs().max() == 0
    assert 0 < adversary.second.abs().max() <= 1 / np.sqrt(3)
    adversary.initialize(torch.Generator().manual_seed(0), "random")
    first = adversary.first.detach()
    assert first.abs().max() <= 1 / np.sqrt(400) and first.std() > 0.5 / np.sqrt(3 * 400)  # uniform ±1/√400
    assert torch.linalg.matrix_rank(first) == 3
    linear = posit.Adversary("linear", 400, nstd=1.0)
    linear.initialize(torch.Generator().manual_seed(0), "authors")  # the authors' Linear keeps its default bias
    assert linear.first.abs().max() == 0 and 0 < linear.bias.abs().item() <= 1 / np.sqrt(400)
    with pytest.raises(
        registry.HyperparameterError, match="hyperparameters.posit.adversary_init: 'zero' is not one of authors, random"
    ):
        completed("posit", {**HYPERPARAMETERS, "adversary_init": "zero"})


@pytest.mark.parametrize("architecture", ["2bmlp2", "2mlp50"])
def test_a_randomly_initialised_adversary_keeps_learning(architecture):
    """With the authors' initialisation the MLP adversary's weights are set on the first minibatch
    and stay put (weight_change 0 after epoch 1, to float precision); drawn at random, they keep
    moving in every epoch."""
    data = TrainingData(*[power_law_interactions(n, 60, 8, seed=s) for n, s in ((300, 0), (60, 1), (60, 2))])
    hyperparameters = {
        **HYPERPARAMETERS,
        "batch_size": 32,
        "epochs": 5,
        "patience": 5,
        "adversary": architecture,
        "k": 10,
        "signal": "recall_dist",
        "ties": "topk",
        "drop_last": True,
    }
    histories = {
        init: posit.fit(
            data, completed("posit", {**hyperparameters, "adversary_init": init}), TrainingRun("toy", "posit", 0)
        ).history
        for init in ("authors", "random")
    }
    authors = [entry["weight_change"] for entry in histories["authors"]]
    learning = [entry["weight_change"] for entry in histories["random"]]
    assert authors[0] > 0.05 and max(authors[1:]) < 1e-4 * authors[0]
    assert min(learning[1:]) > 1e-3
    shares = [entry["weight_share_least_popular_half"] for entry in histories["random"]]
    assert len(set(shares)) == len(shares)


def test_a_k_above_the_catalog_is_refused_before_training():
    X = power_law_interactions(40, 6, 3, exponent=0.5, seed=1)
    data = TrainingData(train=X, validation_tr=X[:10], validation_te=X[10:20])
    hyperparameters = completed("posit", {**HYPERPARAMETERS, "k": 7})
    with pytest.raises(ValueError) as caught:
        posit.fit(data, hyperparameters, TrainingRun("toy", "posit", 0, variant="posit_k7"))
    assert str(caught.value) == (
        "toy/posit_k7 seed 0: k = 7 is larger than the 6 items of toy (its preprocessed split): the recall "
        "signal's top-k cannot hold more items than the catalog; give posit_k7 a k of at most 6"
    )
    posit.check_k(6, 6, TrainingRun("toy", "posit", 0))  # every item in the top-k is allowed, as for evaluation.ks
