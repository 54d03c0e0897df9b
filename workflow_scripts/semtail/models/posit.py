"""POSIT: Promotion of Semantic Item Tail via adversarial learning (Xu, Shivaswamy, Zhang, 2023).

A learner U (the SGD EASE of ease.py) and an adversary that weights the items play a min-max game.

1. Advantage signal. From the batch's detached predictions, each user's recall contribution at k:
       recall:       r_ui = 1[i ∈ top-k(x̂_u)] · x_ui
       recall_dist:  r_ui = 1[i ∈ top-k(x̂_u)] · x_ui / min(k, |x_u|)
   `ties` says which k items are the top-k when scores tie at the cut (on the first minibatch,
   where U = 0, every score ties):
       topk:   the authors' rule. The k slots are the indices torch.topk returns for the row, so
               ties are broken in whatever order torch.topk returns them on that device. As in
               their code, recall_dist is (x_ui + ε) / (min(k, |x_u|) + ε) with ε = 1e-8, at
               every one of the k slots (a slot without a positive gets ε / (min(k, |x_u|) + ε)).
       share:  items tied at the k-th score share the slots left equally, the expected membership
               under a random tie-break (see cut_and_share); no ε.
2. Accumulation, with momentum m (signal_momentum):
       S_i ← m·S_i − Σ_u r_ui,     C_i ← m·C_i + c_i,     S = 0 and C = 1e-15 at the start
   where c_i is the batch size, or with ones_aware item i's positives in the batch.
3. The adversary reads each item's column of X (a sparse vector over training users), all items at
   once, and gives w = sigmoid(nstd · f(x_·i)), normalised to w̄ = w / mean(w) (the mean detached).
       linear:  f = Linear(users→1, bias)
       2mlpN:   f = Linear(users→N) → BatchNorm(N) → tanh → Linear(N→1) → BatchNorm(1)
       2bmlpN:  the same with ×nstd after the first BatchNorm
   The BatchNorms have no affine part and always use the statistics over all items (no running
   statistics). `adversary_init` sets the starting parameters:
       authors:  as the authors' code: the first layer's weights at 0, so the weights start
                 uniform, w̄ = 1; the second layer, and the linear adversary's bias, as torch's
                 Linear default, uniform in ±1/sqrt(fan_in).
       random:   every layer as torch's Linear default, the first one included, so the adversary
                 starts from distinct random projections of the item columns.
4. Adversary loss:  A = −mean_i(w̄_i · L̃_i),  L̃_i = (S_i/C_i) / mean_j |S_j/C_j|  (detached).
   S ≤ 0, so A is smallest when the weight sits on items with little recall: the worst served.
5. Learner loss:    λ · mean_i(w̄_i · ℓ_i), with the previous minibatch's w̄, detached.
6. Each minibatch takes one SGD step on both players; the adversary has its own learning rate
   (alr) and weight decay (awd), no momentum, and the same cosine annealing as the learner.

Order within minibatch t ("the weights from the previous adversary step", as the authors' code
does it): the learner loss uses w̄_{t−1}, the weights the adversary's forward gave at minibatch t−1
(w̄ = 1 before the first); S and C are updated with batch t; one adversary forward with its current
parameters gives w̄_t, which the adversary loss uses and the next minibatch's learner will; then
both players step. Where C_i is still 0, S_i is 0 too and S_i/C_i is taken as 0; a zero
mean_j |S_j/C_j| gives L̃ = 0.

A property of the `authors` initialisation worth knowing when reading its weights: the first layer
starts at 0, so the BatchNorm after it divides by sqrt(eps) on the first step, and that step's update
is about 10⁵ times larger than later ones; BatchNorm's scale invariance then makes later updates
small relative to it. The MLP adversaries' weights are therefore set on the first minibatch, where
U = 0 and every score ties (so `ties` decides them), and hardly change afterwards; with `random`
they keep moving from epoch to epoch. The epoch log's weight statistics show how much.
"""

from __future__ import annotations

import math
import re

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import matrix_scorer, reconstruction_loss_per_item, to_torch_csr
from semtail.training import Objective, train

DECLARATION = {
    "training": "sgd",
    "hyperparameters": {
        "lam": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
            "description": "λ, the factor of the weighted learner loss",
        },
        "alr": {"type": "number", "exclusiveMinimum": 0, "description": "adversary learning rate (no momentum)"},
        "nstd": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "scale of the adversary output before the sigmoid (and, for 2bmlpN, of the hidden layer)",
        },
        "awd": {"type": "number", "minimum": 0, "default": 0.0, "description": "adversary weight decay"},
        "adversary": {
            "type": "string",
            "pattern": "^(linear|2b?mlp[1-9][0-9]*)$",
            "description": "linear, 2mlpN or 2bmlpN (N hidden units)",
        },
        "signal": {
            "type": "string",
            "enum": ["recall", "recall_dist"],
            "description": "the per-item advantage signal: recall@k, or recall@k divided by min(k, |x_u|)",
        },
        "ones_aware": {
            "type": "boolean",
            "default": False,
            "description": "count an item's positives in a batch (true) or the batch's users (false) in C",
        },
        "k": {
            "type": "integer",
            "minimum": 1,
            "default": 100,
            "description": "cut-off of the recall signal (100 in the paper)",
        },
        "signal_momentum": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.9,
            "description": "momentum m of the accumulators S and C (0.9 in the paper)",
        },
        "ties": {
            "type": "string",
            "enum": ["topk", "share"],
            "default": "topk",
            "description": "which items fill the signal's top-k when scores tie at the cut (every score ties on the first minibatch, where U = 0). topk: the authors' rule, the indices torch.topk returns (its tie order depends on the device and torch version), with their 1e-8 in recall_dist. share: tied items share the slots left equally",
        },
        "adversary_init": {
            "type": "string",
            "enum": ["authors", "random"],
            "default": "authors",
            "description": "authors: the first layer at 0, as the authors' code (the MLP adversaries' weights are then fixed by the first minibatch); random: torch's Linear default for every layer, with which the MLP adversaries keep learning",
        },
    },
    "state": {"U": ["items", "items"]},
    "item_item": "U",
    "item_weights": True,
    # The adversary: up to 50 hidden units per training user, with their gradient and a copy.
    "resources": {"gpu": True, "memory": {"bytes_per_training_user": 600}},
    "figures": {"label": "POSIT", "colour": "#d55e00", "marker": "*", "marker_size": 11},
}
SIGNALS = tuple(DECLARATION["hyperparameters"]["signal"]["enum"])
AUTHORS_EPSILON = 1e-8  # in the authors' recall_dist, added to the hit and to min(k, |x_u|)
C_START = 1e-15  # the authors' starting C (S/C of an item never counted is then 0, not NaN)
ARCHITECTURE = re.compile(r"^(linear|2(b?)mlp([1-9][0-9]*))$")
TINY = torch.finfo(torch.float32).tiny
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default


# -- 1, 2, 4: signal, accumulators, adversary loss ------------------------------------------------


def cut_and_share(predictions: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the k-th best score, and the share of a top-k slot that each item tied with it
    gets. Items tied at the cut share the slots left equally (the expected membership under a
    random tie-break); without ties the share is 1. It matters on the first batch, where U = 0
    and every score ties."""
    k = min(k, predictions.shape[1])
    best = predictions.topk(k, dim=1).values
    kth = best[:, -1:]
    slots_left = (best == kth).sum(dim=1, keepdim=True)
    tied = (predictions == kth).sum(dim=1, keepdim=True, dtype=torch.int32)  # int32: no int64 copy of the mask on a CPU
    return kth, slots_left / tied


def top_k_membership(predictions: torch.Tensor, k: int) -> torch.Tensor:
    """1[i ∈ top-k of row u] for every (u, i), ties at the cut sharing the slots left."""
    kth, share = cut_and_share(predictions, k)
    return torch.where(predictions > kth, 1.0, torch.where(predictions == kth, share, 0.0))


def recall_signal_share(predictions: torch.Tensor, positives: torch.Tensor, k: int, signal: str) -> torch.Tensor:
    """Σ_u r_ui for every item i: the batch's recall contributions at k, summed over its users,
    ties at the cut sharing the slots left. `positives` is the batch's interaction matrix as
    sparse CSR (r_ui = 0 where x_ui = 0)."""
    check_signal(signal)
    kth, share = cut_and_share(predictions, k)
    per_user = positives.crow_indices().diff()
    item = positives.col_indices()
    user = torch.repeat_interleave(torch.arange(len(per_user), device=item.device), per_user, output_size=len(item))
    score = predictions[user, item]
    recalled = torch.where(score > kth[user, 0], 1.0, torch.where(score == kth[user, 0], share[user, 0], 0.0))
    if signal == "recall_dist":
        recalled = recalled / per_user.clamp(min=1, max=k)[user]
    return torch.zeros(predictions.shape[1], device=predictions.device).index_add_(0, item, recalled)


def recall_signal_topk(predictions: torch.Tensor, interactions: torch.Tensor, k: int, signal: str) -> torch.Tensor:
    """Σ_u r_ui as the authors compute it: r_ui at the k slots that torch.topk returns for each
    row, its tie order included, and recall_dist with their ε. `interactions` is dense 0/1."""
    check_signal(signal)
    k = min(k, predictions.shape[1])
    slots = predictions.topk(k, dim=1).indices
    hits = interactions.gather(1, slots)
    if signal == "recall_dist":
        hits = (hits + AUTHORS_EPSILON) / (interactions.sum(dim=1, keepdim=True).clamp(max=k) + AUTHORS_EPSILON)
    return torch.zeros(predictions.shape[1], device=predictions.device).index_add_(0, slots.flatten(), hits.flatten())


def check_signal(signal: str) -> None:
    """The signal functions take the signal by name: an unknown one is an error, not plain recall."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown POSIT signal {signal!r} (known: {', '.join(SIGNALS)})")


def accumulate_(
    S: torch.Tensor, C: torch.Tensor, signal_sum: torch.Tensor, counts: torch.Tensor, momentum: float
) -> None:
    """S ← m·S − Σ_u r_u·,  C ← m·C + c, in place."""
    S.mul_(momentum).sub_(signal_sum)
    C.mul_(momentum).add_(counts)


def normalised_advantage(S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """L̃_i = (S_i/C_i) / mean_j |S_j/C_j|."""
    ratio = S / C.clamp_min(TINY)
    return ratio / ratio.abs().mean().clamp_min(TINY)


def adversary_loss(normalised_weights: torch.Tensor, S: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """A = −mean_i(w̄_i · L̃_i); L̃ carries no gradient."""
    return -(normalised_weights * normalised_advantage(S, C).detach()).mean()


def normalise(weights: torch.Tensor) -> torch.Tensor:
    """w̄ = w / mean(w), the mean taken as a constant."""
    return weights / weights.mean().detach()


# -- 3: the adversary -----------------------------------------------------------------------------


def batch_norm(z: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d without affine part or running statistics, over the item axis: each column
    standardised by its mean and (biased) variance over all items."""
    mean = z.mean(dim=0, keepdim=True)
    variance = (z - mean).square().mean(dim=0, keepdim=True)
    return (z - mean) / torch.sqrt(variance + BATCH_NORM_EPS)


class _SparseProduct(torch.autograd.Function):
    """rows @ weight for a constant sparse CSR `rows`; the backward uses a ready CSR of rowsᵀ."""

    @staticmethod
    def forward(ctx, weight, rows, rows_transposed):
        ctx.rows_transposed = rows_transposed
        return torch.sparse.mm(rows, weight)

    @staticmethod
    def backward(ctx, grad_output):
        return torch.sparse.mm(ctx.rows_transposed, grad_output), None, None


class ItemColumns:
    """X's item columns as a sparse CSR (items × training users) on the device, with its transpose."""

    def __init__(self, train: sp.csr_matrix, device: torch.device):
        self.items_by_users = to_torch_csr(train.T.tocsr(), device)
        self.users_by_items = to_torch_csr(train, device)

    def times(self, weight: torch.Tensor) -> torch.Tensor:
        return _SparseProduct.apply(weight, self.items_by_users, self.users_by_items)


def torch_linear_default(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform in ±1/sqrt(fan_in): torch's Linear default for its weight and its bias."""
    bound = 1 / math.sqrt(fan_in)
    return torch.rand(shape, generator=generator) * 2 * bound - bound


class Adversary(nn.Module):
    """Item weights w ∈ (0, 1) from the items' columns of X."""

    def __init__(self, architecture: str, n_users: int, nstd: float):
        super().__init__()
        match = ARCHITECTURE.match(architecture)
        if match is None:
            raise ValueError(f"adversary {architecture!r} is not linear, 2mlpN or 2bmlpN")
        self.architecture = architecture
        self.nstd = nstd
        self.is_linear = match.group(1) == "linear"
        self.scale_hidden = match.group(2) == "b"
        hidden = 1 if self.is_linear else int(match.group(3))
        # The first layer, Linear(users → hidden), stored as users × hidden for the sparse product.
        self.first = nn.Parameter(torch.zeros(n_users, hidden))
        if self.is_linear:
            self.bias = nn.Parameter(torch.zeros(1))
        else:
            self.second = nn.Parameter(torch.zeros(hidden, 1))  # Linear(hidden → 1), no bias

    def initialize(self, generator: torch.Generator, scheme: str = "authors") -> None:
        """The starting parameters, drawn from the job's generator (see the module docstring):
        `authors` puts the first layer's weights at 0, `random` draws them as the other layers,
        uniform in ±1/sqrt(fan_in) like torch's Linear default."""
        n_users = self.first.shape[0]
        with torch.no_grad():
            if scheme == "random":
                self.first.copy_(torch_linear_default(self.first.shape, n_users, generator))
            else:
                self.first.zero_()
            if self.is_linear:
                self.bias.copy_(torch_linear_default(self.bias.shape, n_users, generator))
            else:
                self.second.copy_(torch_linear_default(self.second.shape, self.second.shape[0], generator))

    def forward(self, columns: ItemColumns) -> torch.Tensor:
        z = columns.times(self.first)
        if self.is_linear:
            z = z + self.bias
        else:
            z = batch_norm(z)
            if self.scale_hidden:
                z = z * self.nstd
            z = batch_norm(torch.tanh(z) @ self.second)
        return torch.sigmoid(self.nstd * z.squeeze(1))


# -- 5, 6: the objective --------------------------------------------------------------------------


class AdversarialObjective(Objective):
    def __init__(self, data: TrainingData, hyperparameters: dict, device: torch.device):
        super().__init__()
        h = hyperparameters
        self.lam = float(h["lam"])
        self.k = int(h["k"])
        self.signal, self.ties, self.adversary_init = h["signal"], h["ties"], h["adversary_init"]
        self.ones_aware = h["ones_aware"]
        self.momentum = float(h["signal_momentum"])
        self.alr, self.awd = float(h["alr"]), float(h["awd"])
        self.columns = ItemColumns(data.train, device)
        self.adversary = Adversary(h["adversary"], data.n_train_users, float(h["nstd"]))
        self.register_buffer("S", torch.zeros(data.n_items))
        self.register_buffer("C", torch.full((data.n_items,), C_START))
        self.register_buffer("learner_weights", torch.ones(data.n_items))  # w̄ of the previous minibatch
        popularity = data.popularity()
        least_popular = np.argsort(popularity, kind="stable")[: data.n_items // 2]
        tail = torch.zeros(data.n_items, dtype=torch.bool)
        tail[torch.from_numpy(least_popular)] = True
        self.register_buffer("least_popular_half", tail, persistent=False)
        self.register_buffer("weights_at_last_epoch", torch.ones(data.n_items))  # for the epoch's weight_change

    def initialize(self, generator: torch.Generator) -> None:
        self.adversary.initialize(generator, self.adversary_init)
        self.weights_at_last_epoch = self.item_weights()

    def batch_losses(
        self, predictions: torch.Tensor, interactions: torch.Tensor, rows: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        learner = self.lam * (self.learner_weights * reconstruction_loss_per_item(predictions, interactions)).mean()
        weights = normalise(self.adversary(self.columns))
        self.learner_weights = weights.detach()  # a new tensor: the learner loss above still needs the old one
        with torch.no_grad():
            rows = interactions.to_sparse_csr() if rows is None else rows
            if self.ties == "topk":
                signal_sum = recall_signal_topk(predictions.detach(), interactions, self.k, self.signal)
            else:
                signal_sum = recall_signal_share(predictions.detach(), rows, self.k, self.signal)
            if self.ones_aware:
                counts = torch.bincount(rows.col_indices(), minlength=len(signal_sum)).float()
            else:
                counts = torch.full_like(signal_sum, interactions.shape[0])
            accumulate_(self.S, self.C, signal_sum, counts, self.momentum)
        return {"loss": learner, "adversary_loss": adversary_loss(weights, self.S, self.C)}

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.adversary.parameters()), "lr": self.alr, "weight_decay": self.awd}]

    @torch.no_grad()
    def item_weights(self) -> torch.Tensor:
        return normalise(self.adversary(self.columns))

    def epoch_statistics(self) -> dict[str, float]:
        """The weights w̄ after the epoch; weight_change is mean_i |w̄_i − w̄_i at the previous epoch's
        end (or at the start)|, how far the adversary moved them in this epoch."""
        w = self.item_weights()
        change = (w - self.weights_at_last_epoch).abs().mean().item()
        self.weights_at_last_epoch = w
        return {
            "weight_min": w.min().item(),
            "weight_mean": w.mean().item(),
            "weight_max": w.max().item(),
            "weight_std": w.std().item(),
            "weight_share_least_popular_half": (w[self.least_popular_half].sum() / w.sum()).item(),
            "weight_change": change,
        }


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    check_k(int(hyperparameters["k"]), data.n_items, run)
    return train(data, hyperparameters, run, AdversarialObjective(data, hyperparameters, run.device))


def check_k(k: int, n_items: int, run: TrainingRun) -> None:
    """The signal's cut-off against the catalog, before training: a top-k longer than the catalog
    would be every item, silently."""
    if k > n_items:
        raise ValueError(
            f"{run.describe()}: k = {k} is larger than the {n_items} items of {run.dataset} (its preprocessed "
            f"split): the recall signal's top-k cannot hold more items than the catalog; give "
            f"{run.variant or run.method} a k of at most {n_items}"
        )


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["U"], device)
