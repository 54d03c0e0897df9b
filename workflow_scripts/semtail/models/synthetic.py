"""Synthetic binary interaction data for the tests and the training benchmark (never for results).

Item popularity follows a power law, users' activity a log-normal law, and, so that an item-item
model has something to learn, each user draws most items from one of a few taste groups.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from semtail.models.base import TrainingData


def power_law_interactions(
    n_users: int,
    n_items: int,
    mean_per_user: float,
    *,
    exponent: float = 1.0,
    groups: int = 4,
    in_group: float = 0.7,
    seed: int = 0,
) -> sp.csr_matrix:
    """A binary users × items CSR matrix (float32) with about `mean_per_user` items per user."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** exponent
    item_group = rng.integers(groups, size=n_items)
    user_group = rng.integers(groups, size=n_users)
    activity = rng.lognormal(0.0, 0.5, size=n_users)
    per_user = np.maximum(1, np.round(activity / activity.mean() * mean_per_user)).astype(np.int64)
    rows = np.repeat(np.arange(n_users), per_user)
    columns = np.empty(len(rows), dtype=np.int64)
    from_group = rng.random(len(rows)) < in_group
    overall = popularity / popularity.sum()
    columns[~from_group] = rng.choice(n_items, size=int((~from_group).sum()), p=overall)
    for group in range(groups):
        members = np.flatnonzero(item_group == group)
        wanted = from_group & (user_group[rows] == group)
        if len(members) == 0 or not wanted.any():
            columns[wanted] = rng.choice(n_items, size=int(wanted.sum()), p=overall)
            continue
        p = popularity[members] / popularity[members].sum()
        columns[wanted] = members[rng.choice(len(members), size=int(wanted.sum()), p=p)]
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def fold_in_split(
    matrix: sp.csr_matrix, heldout_share: float = 0.2, seed: int = 0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Each row's interactions split at random into fold-in and held-out parts."""
    rng = np.random.default_rng(seed)
    coo = matrix.tocoo()
    heldout = rng.random(coo.nnz) < heldout_share
    parts = []
    for keep in (~heldout, heldout):
        part = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape, dtype=np.float32)
        part.sort_indices()
        parts.append(part)
    return parts[0], parts[1]


def training_data(
    n_users: int, n_items: int, mean_per_user: float, n_validation_users: int, seed: int = 0, **kwargs
) -> TrainingData:
    """Training users and validation users from the same synthetic population."""
    everyone = power_law_interactions(n_users + n_validation_users, n_items, mean_per_user, seed=seed, **kwargs)
    fold_in, heldout = fold_in_split(everyone[n_users:], seed=seed + 1)
    return TrainingData(train=everyone[:n_users].tocsr(), validation_tr=fold_in, validation_te=heldout)
