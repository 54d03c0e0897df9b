"""EASE in closed form (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    P = (XᵀX + λI)⁻¹,    B = I − P · diag(1/diag(P)),

so B_ij = −P_ij / P_jj off the diagonal and B_ii = 0. λ is the `l2` hyperparameter. The Gram
matrix is exact (integer counts), and the inverse is taken in float64 through a Cholesky
factorisation; B is stored in float32.
"""

from __future__ import annotations

import logging
import time

import scipy.sparse as sp
import torch

from semtail.models.base import Fitted, TrainingData, TrainingRun
from semtail.models.itemitem import matrix_scorer, to_torch_csr, zero_diagonal_

DECLARATION = {
    "training": "closed_form",
    "hyperparameters": {
        "l2": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "λ of Steck's closed form, B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹",
        },
    },
    "state": {"B": ["items", "items"]},
    "item_item": "B",
    "seed_dependent": False,
    # The Gram matrix and its inverse in float64, and the solver's workspace; a Cholesky solve.
    "resources": {
        "gpu": True,
        "memory": {"dense": 6, "sparse": 2},
        "runtime": {"cubic_flops": 2, "dense_file_passes": 2},
    },
    "figures": {"label": "EASE (closed form)", "colour": "#56b4e9", "marker": "P"},
}

# Dense column blocks of X used to build XᵀX hold at most this many entries (float32).
GRAM_BLOCK_ENTRIES = 2**26
PROGRESS_SECONDS = 10.0  # at most one log line per this many seconds while XᵀX is built

_log = logging.getLogger(__name__)


def gram_matrix(interactions: sp.csr_matrix, device: torch.device, log: logging.Logger = _log) -> torch.Tensor:
    """XᵀX in float64 on `device`, built from sparse × dense-column-block products; its progress
    logged at most every PROGRESS_SECONDS."""
    n_users, n_items = interactions.shape
    started = last_logged = time.monotonic()
    items_by_users = to_torch_csr(interactions.T.tocsr(), device)
    by_column = interactions.tocsc()
    block = max(1, GRAM_BLOCK_ENTRIES // max(n_users, 1))
    gram = torch.empty(n_items, n_items, dtype=torch.float64, device=device)
    for start in range(0, n_items, block):
        columns = torch.from_numpy(by_column[:, start : start + block].toarray()).to(device)
        # Sums of 0/1 products below 2**24 are exact in float32.
        gram[:, start : start + block] = torch.sparse.mm(items_by_users, columns).double()
        del columns
        done = min(start + block, n_items)
        if time.monotonic() - last_logged >= PROGRESS_SECONDS and done < n_items:
            last_logged = time.monotonic()
            log.info("XᵀX: %d of %d item columns, %.0f s", done, n_items, last_logged - started)
    log.info("XᵀX: %d item columns in %.1f s", n_items, time.monotonic() - started)
    return gram


def closed_form(
    interactions: sp.csr_matrix, l2: float, device: torch.device, log: logging.Logger = _log
) -> torch.Tensor:
    """Steck's B for the training matrix, float32 on `device`, zero diagonal. Each step is logged
    as it starts, with the time taken so far: the factorisation and the inverse take one call each."""
    started = time.monotonic()
    gram = gram_matrix(interactions, device, log)
    gram.diagonal().add_(l2)
    n_items = gram.shape[0]
    log.info(
        "Cholesky factorisation of the %d × %d Gram matrix (%.0f s so far)",
        n_items,
        n_items,
        time.monotonic() - started,
    )
    factor = torch.linalg.cholesky(gram)
    del gram
    log.info("inverse from the Cholesky factor (%.0f s so far)", time.monotonic() - started)
    precision = torch.cholesky_inverse(factor)  # P = (XᵀX + λI)⁻¹
    del factor
    log.info("B from the inverse (%.0f s so far)", time.monotonic() - started)
    weights = precision.div_(-precision.diagonal().clone())  # −P_ij / P_jj: divides column j
    return zero_diagonal_(weights).float()


def fit(data: TrainingData, hyperparameters: dict, run: TrainingRun) -> Fitted:
    l2 = float(hyperparameters["l2"])
    run.log.info("closed-form EASE with l2=%g on %d items", l2, data.n_items)
    try:
        weights = closed_form(data.train, l2, run.device, run.log)
    except torch.linalg.LinAlgError as error:
        raise ValueError(too_small_l2(run, l2)) from error
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(too_small_l2(run, l2))
    return Fitted(state={"B": weights.cpu()})


def too_small_l2(run: TrainingRun, l2: float) -> str:
    return (
        f"{run.describe()}: XᵀX + l2·I cannot be inverted in float64 at l2 = {l2:g}: columns of the "
        "training matrix are linearly dependent (e.g. two items with the same users) and l2 is too "
        f"small to make up for it. Set a larger `l2` for {run.variant or run.method} "
        "(Steck's values are in the hundreds); no model file is written."
    )


def scorer(state: dict, hyperparameters: dict, device: torch.device):
    return matrix_scorer(state["B"], device)
