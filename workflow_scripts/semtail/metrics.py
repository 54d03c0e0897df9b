"""Ranking metrics, as pure functions of top-k item indices and held-out items.

Conventions: `top_k` is a (users × k) long tensor of item indices, best first; `heldout` is a
(users × items) dense 0/1 tensor of held-out items. Users with no held-out item get NaN in
per-user metrics, and callers leave them out of averages.
"""

from __future__ import annotations

import torch


def rank_top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The k best items per row, best first; ties go to the lower item index.

    `exclude` (same shape, bool or 0/1) marks items that may not be recommended, such as a
    user's fold-in items. k larger than the catalog returns every item.
    """
    scores = scores.float()
    if exclude is not None:
        scores = scores.masked_fill(exclude.bool(), float("-inf"))
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k == 0 or n_rows == 0:
        return torch.empty(n_rows, k, dtype=torch.long, device=scores.device)
    kth_value = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth_value
    tied = scores == kth_value
    tied_slots = k - above.sum(dim=1, keepdim=True)
    selected = above | (tied & (tied.cumsum(dim=1) <= tied_slots))
    indices = selected.nonzero()[:, 1].view(n_rows, k)  # ascending item index within each row
    order = scores.gather(1, indices).sort(dim=1, descending=True, stable=True).indices
    return indices.gather(1, order)


def ndcg_at_k(top_k: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k per user: binary gains, discount 1/log2(rank + 1), ideal DCG over min(k, #held-out)."""
    top_k = top_k[:, :k]
    heldout = heldout.float()
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32, device=heldout.device))
    hits = heldout.gather(1, top_k)
    dcg = (hits * discounts[: top_k.shape[1]]).sum(dim=1)
    n_heldout = heldout.sum(dim=1).clamp(max=k).long()
    ideal = torch.cat([torch.zeros(1, device=heldout.device), discounts.cumsum(0)])[n_heldout]
    return torch.where(n_heldout > 0, dcg / ideal.clamp(min=1e-12), torch.full_like(dcg, float("nan")))
