"""Ranking metrics, as pure functions of top-k item indices and held-out items.

Conventions: `top_k` is a (users × k) long tensor of item indices, best first; `heldout` is a
(users × items) dense 0/1 tensor of held-out items. A slot of a list may be EMPTY (-1): when a user
has fewer than k recommendable items (see `recommend`); empty slots are never hits and never
exposure. Users with no held-out item get NaN in per-user metrics, and callers leave them out of
averages.

The functions here work per batch, on torch tensors on any device. Those of a whole run's lists
or counts (coverage, item recall, Gini, Lorenz curve, long tail) take numpy arrays and work in
float64: they are in semtail.run_metrics, which needs no torch (the plot jobs import it alone).
"""

from __future__ import annotations

import recsys_metrics
import torch

from semtail.run_metrics import EMPTY


def rank_top_k(
    scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None, overwrite: bool = False
) -> torch.Tensor:
    """The k best items per row, best first; ties go to the lower item index.

    `exclude` (same shape, bool or 0/1) marks items that may not be recommended, such as a
    user's fold-in items: they rank below every other item of the row, whatever its score (−inf
    included), so they only fill the slots left when a row has fewer than k other items. k larger
    than the catalog returns every item. Scores are ranked in their own floating dtype; other
    dtypes are ranked as float64. A NaN score of an item not excluded is a ValueError (an excluded
    item's score is never looked at). `overwrite`: the caller has no further use for `scores`, so
    excluded items are masked in them rather than in a copy.
    """
    if not scores.is_floating_point():
        scores = scores.double()
    excluded = None if exclude is None else exclude.bool()
    if excluded is not None:
        scores = (
            scores.masked_fill_(excluded, float("-inf")) if overwrite else scores.masked_fill(excluded, float("-inf"))
        )
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k == 0 or n_rows == 0:
        return torch.empty(n_rows, k, dtype=torch.long, device=scores.device)
    # One more than k: a tie crosses the cut exactly where the (k+1)-th best score equals the k-th.
    best = scores.topk(min(k + 1, n_items), dim=1)
    # topk ranks NaN above every number, so on the CPU a row's NaN shows among its best; elsewhere
    # every score is looked at.
    if torch.isnan(best.values if scores.is_cpu else scores).any():
        raise ValueError("cannot rank NaN scores")
    kth_value = best.values[:, k - 1 : k]
    indices = best.indices[:, :k].sort(dim=1).values  # ascending item index within each row
    # topk's set is right wherever no tie crosses the cut; only the other rows go through the tie rule.
    if n_items > k:
        cut = (best.values[:, k] == best.values[:, k - 1]).nonzero().squeeze(1)
        if len(cut):
            indices[cut] = _tied_at_the_cut(scores[cut], None if excluded is None else excluded[cut], kth_value[cut], k)
    # Two stable sorts: by score, then excluded items last; equal keys keep item order.
    indices = indices.gather(1, scores.gather(1, indices).sort(dim=1, descending=True, stable=True).indices)
    if excluded is None:
        return indices
    return indices.gather(1, excluded.gather(1, indices).byte().sort(dim=1, stable=True).indices)


def _tied_at_the_cut(
    scores: torch.Tensor, excluded: torch.Tensor | None, kth_value: torch.Tensor, k: int
) -> torch.Tensor:
    """The k items of `rank_top_k` for rows where more items tie with the k-th score than slots
    are left, in ascending item order: every item above the k-th score, then the tied slots go to
    tied items not excluded first (only at −inf do excluded items tie), each group in item order."""
    above = scores > kth_value
    tied = scores == kth_value
    slots = k - above.sum(dim=1, keepdim=True)
    if excluded is None:
        selected = above | (tied & (tied.cumsum(dim=1) <= slots))
    else:
        tied_kept, tied_excluded = tied & ~excluded, tied & excluded
        slots_excluded = slots - tied_kept.sum(dim=1, keepdim=True)
        selected = (
            above
            | (tied_kept & (tied_kept.cumsum(dim=1) <= slots))
            | (tied_excluded & (tied_excluded.cumsum(dim=1) <= slots_excluded))
        )
    return selected.nonzero()[:, 1].view(len(scores), k)


def ndcg_at_k(
    top_k: torch.Tensor, heldout: torch.Tensor, k: int, n_heldout: torch.Tensor | None = None
) -> torch.Tensor:
    """NDCG@k per user: binary gains, discount 1/log2(rank + 1), ideal DCG over min(k, #held-out).
    `n_heldout`: each user's number of held-out items where the caller has it (else counted)."""
    top_k = top_k[:, :k]
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32, device=heldout.device))
    hits = heldout.gather(1, top_k).float()  # users × k: no float copy of the whole held-out matrix
    dcg = (hits * discounts[: top_k.shape[1]]).sum(dim=1)
    if n_heldout is None:
        n_heldout = heldout.sum(dim=1, dtype=torch.int32)
    n_heldout = n_heldout.clamp(max=k).long()
    ideal = torch.cat([torch.zeros(1, device=heldout.device), discounts.cumsum(0)])[n_heldout]
    return torch.where(n_heldout > 0, dcg / ideal.clamp(min=1e-12), torch.full_like(dcg, float("nan")))


# ---- lists of one batch of users (torch) ----


def recommend(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k lists as `rank_top_k` ranks them, but a slot that would hold an excluded item, or lie
    beyond the catalog, is EMPTY: a user with fewer than k recommendable items gets a shorter list."""
    top_k = rank_top_k(scores, k, exclude)
    if exclude is not None:
        top_k = top_k.masked_fill(exclude.bool().gather(1, top_k), EMPTY)
    if top_k.shape[1] < k:
        padding = torch.full((top_k.shape[0], k - top_k.shape[1]), EMPTY, dtype=torch.long, device=top_k.device)
        top_k = torch.cat([top_k, padding], dim=1)
    return top_k


def list_hits(top_k: torch.Tensor, heldout: torch.Tensor) -> torch.Tensor:
    """(users × k) bool: the item in each slot is one of the user's held-out items."""
    listed = top_k != EMPTY
    return heldout.bool().gather(1, top_k.clamp(min=0)) & listed


def _no_heldout_to_nan(values: torch.Tensor, heldout: torch.Tensor) -> torch.Tensor:
    has_heldout = heldout.bool().any(dim=1)
    return torch.where(has_heldout, values.float(), torch.full_like(values, float("nan"), dtype=torch.float32))


def ranking_key(top_k: torch.Tensor, n_items: int) -> torch.Tensor:
    """A (users × (items + k)) score matrix under which any top-k routine returns exactly `top_k`.

    Slot r's item scores k - r; an EMPTY slot r puts that score on padding column items + r instead,
    so that no unlisted item can enter the list; every other item scores 0. All listed scores
    are distinct, so library metrics that rank by scores see our tie-breaking and our masking.
    """
    n_users, k = top_k.shape
    key = torch.zeros(n_users, n_items + k, dtype=torch.float32, device=top_k.device)
    slot = torch.arange(k, device=top_k.device).expand(n_users, k)
    column = torch.where(top_k == EMPTY, n_items + slot, top_k)
    key.scatter_(1, column, (k - slot).float())
    return key


def _pad_items(heldout: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.pad(heldout.float(), (0, k))


def ndcg(top_k: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k per user, by `recsys_metrics.normalized_dcg`: binary gains, discount 1/log2(rank + 1),
    the ideal DCG over min(k, #held-out) items."""
    key = ranking_key(top_k, heldout.shape[1])
    values = recsys_metrics.normalized_dcg(key, _pad_items(heldout, top_k.shape[1]), k=k, reduction="none")
    return _no_heldout_to_nan(values, heldout)


def hit_rate(top_k: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """1 if any held-out item is in the user's top k, else 0, by `recsys_metrics.hit_rate`."""
    key = ranking_key(top_k, heldout.shape[1])
    values = recsys_metrics.hit_rate(key, _pad_items(heldout, top_k.shape[1]), k=k, reduction="none")
    return _no_heldout_to_nan(values, heldout)


def recall(top_k: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Held-out items in the top k divided by min(k, #held-out) (Liang et al. 2018), per user."""
    hits = list_hits(top_k[:, :k], heldout).sum(dim=1).float()
    n_heldout = heldout.bool().sum(dim=1).float()
    return _no_heldout_to_nan(hits / n_heldout.clamp(min=1, max=k), heldout)


def item_hit_counts(top_k: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per item: how many users hold it out and get it in their top k."""
    top_k = top_k[:, :k]
    hits = list_hits(top_k, heldout)
    counts = torch.zeros(heldout.shape[1], dtype=torch.long, device=top_k.device)
    return counts.scatter_add_(0, top_k[hits], torch.ones_like(top_k[hits]))


def exposure(top_k: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """Per item: in how many users' top-k lists it appears."""
    listed = top_k[:, :k]
    listed = listed[listed != EMPTY]
    return torch.bincount(listed, minlength=n_items)


def mean_list_popularity(top_k: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """Per user: the mean training popularity of the items in the top k (NaN for an empty list)."""
    top_k = top_k[:, :k]
    listed = top_k != EMPTY
    values = popularity.double()[top_k.clamp(min=0)] * listed
    return values.sum(dim=1) / listed.sum(dim=1)  # 0/0 = NaN for an empty list


def tail_slots(top_k: torch.Tensor, is_tail: torch.Tensor, k: int) -> tuple[int, int]:
    """(slots holding a long-tail item, filled slots) over the top k of every user."""
    top_k = top_k[:, :k]
    listed = top_k[top_k != EMPTY]
    return int(is_tail[listed].sum()), int(listed.numel())
