"""Every metric against a brute-force version written here with plain Python loops and float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import recsys_metrics
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semtail import metrics, run_metrics

EMPTY = -1


# ---- brute-force references ----


def brute_list(scores, k, excluded=()):
    """Best first, ties to the lower index, excluded items never listed; -1 pads to k."""
    candidates = [i for i in range(len(scores)) if i not in set(excluded)]
    ranked = sorted(candidates, key=lambda i: (-scores[i], i))[:k]
    return ranked + [EMPTY] * (k - len(ranked))


def brute_ndcg(ranked, heldout, k):
    if not heldout:
        return math.nan
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in heldout)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(heldout))))
    return dcg / ideal


def brute_recall(ranked, heldout, k):
    if not heldout:
        return math.nan
    return sum(item in heldout for item in ranked[:k]) / min(k, len(heldout))


def brute_hit_rate(ranked, heldout, k):
    if not heldout:
        return math.nan
    return float(any(item in heldout for item in ranked[:k]))


def brute_coverage(lists, k, block_size):
    blocks = len(lists) // block_size
    counts = []
    for b in range(blocks):
        union = set()
        for ranked in lists[b * block_size : (b + 1) * block_size]:
            union |= {item for item in ranked[:k] if item != EMPTY}
        counts.append(len(union))
    return sum(counts) / blocks


def brute_gini(x):
    n, total = len(x), sum(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * n * total)


# ---- random cases ----


@st.composite
def ranking_cases(draw, max_users=6, max_items=9):
    """Integer scores (many ties), fold-in and held-out sets that never overlap."""
    n_users = draw(st.integers(1, max_users))
    n_items = draw(st.integers(1, max_items))
    scores = draw(
        st.lists(st.lists(st.integers(-3, 3), min_size=n_items, max_size=n_items), min_size=n_users, max_size=n_users)
    )
    # per item: 0 neither, 1 fold-in, 2 held out
    roles = draw(
        st.lists(st.lists(st.integers(0, 2), min_size=n_items, max_size=n_items), min_size=n_users, max_size=n_users)
    )
    k = draw(st.integers(1, n_items + 3))
    return np.array(scores, dtype=np.float32), np.array(roles), k


def tensors(scores, roles):
    return (
        torch.tensor(scores),
        torch.tensor(roles == 1, dtype=torch.float32),
        torch.tensor(roles == 2, dtype=torch.float32),
    )


def nan_equal(a, b, tol=1e-6):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


@settings(max_examples=60, deadline=None)
@given(ranking_cases())
def test_recommend_matches_brute_force_ranking_with_ties_masks_and_large_k(case):
    scores, roles, k = case
    s, fold_in, _ = tensors(scores, roles)
    masked = metrics.recommend(s, k, exclude=fold_in).tolist()
    unmasked = metrics.recommend(s, k).tolist()
    for u in range(len(scores)):
        assert masked[u] == brute_list(scores[u].tolist(), k, np.flatnonzero(roles[u] == 1))
        assert unmasked[u] == brute_list(scores[u].tolist(), k)


def brute_ranking(scores, excluded=()):
    """Every item: the others by score, ties to the lower index, then the excluded ones by index."""
    excluded = set(excluded)
    kept = sorted((i for i in range(len(scores)) if i not in excluded), key=lambda i: (-scores[i], i))
    return kept + sorted(excluded)


def test_an_excluded_item_never_takes_the_slot_of_an_item_scored_minus_infinity():
    inf = math.inf
    assert metrics.recommend(torch.tensor([[-inf, -inf, 1.0]]), 2, exclude=torch.tensor([[1, 0, 0]])).tolist() == [
        [2, 1]
    ]
    assert metrics.rank_top_k(torch.tensor([[-inf, -inf, 1.0]]), 3, exclude=torch.tensor([[1, 0, 0]])).tolist() == [
        [2, 1, 0]
    ]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda n_items: st.tuples(
            st.lists(
                st.lists(st.sampled_from([-math.inf, -1.0, 0.0, 1.0, math.inf]), min_size=n_items, max_size=n_items),
                min_size=1,
                max_size=4,
            ),
            st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items), min_size=4, max_size=4),
            st.integers(1, n_items + 2),
        )
    ),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_ranking_with_infinite_scores_and_exclusions_matches_brute_force(case, dtype):
    rows, excluded, k = case
    excluded = excluded[: len(rows)]
    scores, exclude = torch.tensor(rows, dtype=dtype), torch.tensor(excluded)
    ranked = metrics.rank_top_k(scores, k, exclude=exclude).tolist()
    listed = metrics.recommend(scores, k, exclude=exclude).tolist()
    for u, row in enumerate(rows):
        out = np.flatnonzero(excluded[u]).tolist()
        assert ranked[u] == brute_ranking(row, out)[:k]
        assert listed[u] == brute_list(row, k, out)


def test_the_tie_rule_runs_on_the_rows_tied_across_the_cut_only(monkeypatch):
    """Continuous scores, where topk's set is the answer, beside rows where more items tie with the
    k-th score than slots are left (at a finite score, and at −inf among excluded items): all
    ranked as by brute force, and only the tied rows passed to the tie rule."""
    generator = torch.Generator().manual_seed(7)
    n_rows, n_items, k = 40, 300, 20
    scores = torch.randn(n_rows, n_items, generator=generator)
    exclude = torch.rand(n_rows, n_items, generator=generator) < 0.1
    tied_rows = [2, 11, 12, 30]
    for row in tied_rows[:3]:  # 15 items share the 14th best score of the row's others
        kept = (~exclude[row]).nonzero().squeeze(1)
        tied = kept[torch.randperm(len(kept), generator=generator)[:15]]
        scores[row, tied] = scores[row, kept].sort(descending=True).values[13]
    exclude[30] = True  # every item excluded: all tie at −inf
    scores[31, :] = scores[31, 0]  # all tied, but nothing excluded and k slots among n_items
    tied_rows.append(31)
    seen = []
    original = metrics._tied_at_the_cut

    def recording(scores, excluded, kth_value, k):
        seen.append(len(scores))
        return original(scores, excluded, kth_value, k)

    monkeypatch.setattr(metrics, "_tied_at_the_cut", recording)
    ranked = metrics.rank_top_k(scores, k, exclude=exclude).tolist()
    unmasked = metrics.rank_top_k(scores, k).tolist()
    for u in range(n_rows):
        out = exclude[u].nonzero().squeeze(1).tolist()
        assert ranked[u] == brute_ranking(scores[u].tolist(), out)[:k], u
        assert unmasked[u] == brute_ranking(scores[u].tolist())[:k], u
    # Masked: rows 2, 11, 12 (finite ties), 30 (−inf), 31; unmasked: 2, 11, 12 and 31.
    assert seen == [len(tied_rows), len(tied_rows) - 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=6, max_size=6), min_size=1, max_size=4))
def test_float64_scores_are_ranked_without_rounding_to_float32(steps):
    # 1 + n * 1e-12 are distinct in float64 but all equal to 1 in float32
    rows = [[1.0 + n * 1e-12 for n in row] for row in steps]
    assert len({float(np.float32(x)) for row in rows for x in row}) == 1
    ranked = metrics.rank_top_k(torch.tensor(rows, dtype=torch.float64), 6).tolist()
    assert ranked == [brute_ranking(row) for row in rows]


def test_integer_scores_are_ranked_exactly():
    big = 2**24  # big + 1 rounds to big in float32
    assert metrics.rank_top_k(torch.tensor([[big, big + 1, big - 1]]), 3).tolist() == [[1, 0, 2]]


def test_nan_scores_are_refused_unless_excluded():
    scores = torch.tensor([[0.5, math.nan, 1.0]])
    with pytest.raises(ValueError, match="NaN"):
        metrics.rank_top_k(scores, 2)
    assert metrics.recommend(scores, 3, exclude=torch.tensor([[0, 1, 0]])).tolist() == [[2, 0, EMPTY]]


@settings(max_examples=60, deadline=None)
@given(ranking_cases())
def test_user_metrics_match_brute_force(case):
    scores, roles, k = case
    s, fold_in, heldout = tensors(scores, roles)
    top = metrics.recommend(s, k, exclude=fold_in)
    for k_eval in sorted({1, k}):
        ndcg = metrics.ndcg(top, heldout, k_eval).tolist()
        recall = metrics.recall(top, heldout, k_eval).tolist()
        hit_rate = metrics.hit_rate(top, heldout, k_eval).tolist()
        for u in range(len(scores)):
            ranked = brute_list(scores[u].tolist(), k, np.flatnonzero(roles[u] == 1))
            held = set(np.flatnonzero(roles[u] == 2).tolist())
            assert nan_equal(ndcg[u], brute_ndcg(ranked, held, k_eval))
            assert nan_equal(recall[u], brute_recall(ranked, held, k_eval))
            assert nan_equal(hit_rate[u], brute_hit_rate(ranked, held, k_eval))


@settings(max_examples=40, deadline=None)
@given(ranking_cases())
def test_item_counts_popularity_and_tail_match_brute_force(case):
    scores, roles, k = case
    s, fold_in, heldout = tensors(scores, roles)
    n_items = scores.shape[1]
    top = metrics.recommend(s, k, exclude=fold_in)
    lists = [brute_list(scores[u].tolist(), k, np.flatnonzero(roles[u] == 1)) for u in range(len(scores))]
    popularity = np.arange(n_items) % 4
    is_tail = popularity < 2

    expected_hits = [sum(i in lst for u, lst in enumerate(lists) if roles[u][i] == 2) for i in range(n_items)]
    expected_exposure = [sum(i in lst for lst in lists) for i in range(n_items)]
    assert metrics.item_hit_counts(top, heldout, k).tolist() == expected_hits
    assert metrics.exposure(top, n_items, k).tolist() == expected_exposure

    mean_popularity = metrics.mean_list_popularity(top, torch.tensor(popularity), k).tolist()
    for u, lst in enumerate(lists):
        listed = [popularity[i] for i in lst if i != EMPTY]
        expected = sum(listed) / len(listed) if listed else math.nan
        assert nan_equal(mean_popularity[u], expected, 1e-12)
    filled = [i for lst in lists for i in lst if i != EMPTY]
    assert metrics.tail_slots(top, torch.tensor(is_tail), k) == (sum(is_tail[i] for i in filled), len(filled))


def test_user_with_everything_in_fold_in_gets_an_empty_list_and_no_metrics():
    scores = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    fold_in = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    heldout = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    top = metrics.recommend(scores, 5, exclude=fold_in)
    assert top.tolist() == [[EMPTY] * 5, [1, 2, EMPTY, EMPTY, EMPTY]]
    assert math.isnan(metrics.ndcg(top, heldout, 5)[0])
    assert math.isnan(metrics.recall(top, heldout, 5)[0])
    assert metrics.recall(top, heldout, 1)[1] == 0.0
    assert metrics.ndcg(top, heldout, 5)[1] == pytest.approx(1 / math.log2(3))
    assert metrics.exposure(top, 3, 5).tolist() == [0, 1, 1]
    assert math.isnan(metrics.mean_list_popularity(top, torch.tensor([5, 7, 9]), 5)[0])


def test_library_ranking_of_empty_slots_never_lets_an_unlisted_item_in():
    # The list is [EMPTY, EMPTY]; held-out item 0 is not listed, so every metric is 0.
    top = torch.tensor([[EMPTY, EMPTY]])
    heldout = torch.tensor([[1.0, 0.0, 0.0]])
    assert metrics.ndcg(top, heldout, 2).item() == 0.0
    assert metrics.hit_rate(top, heldout, 2).item() == 0.0


def test_ndcg_agrees_with_ndcg_at_k():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(50, 30, generator=generator)
    heldout = (torch.rand(50, 30, generator=generator) < 0.2).float()
    heldout[0] = 0
    top = metrics.recommend(scores, 20)
    for k in (1, 5, 20):
        ours = metrics.ndcg(top, heldout, k)
        reference = metrics.ndcg_at_k(metrics.rank_top_k(scores, 20), heldout, k)
        torch.testing.assert_close(ours, reference, equal_nan=True)


@pytest.mark.parametrize("k", [1, 10, 40])
def test_recsys_metrics_agree_on_untied_scores(k):
    generator = torch.Generator().manual_seed(k)
    scores = torch.rand(64, 40, generator=generator)  # continuous: no ties
    heldout = (torch.rand(64, 40, generator=generator) < 0.15).float()
    heldout[:, 0] = 1  # every user holds something out
    top = metrics.recommend(scores, 40)
    torch.testing.assert_close(
        metrics.ndcg(top, heldout, k), recsys_metrics.normalized_dcg(scores, heldout, k=k, reduction="none")
    )
    torch.testing.assert_close(
        metrics.hit_rate(top, heldout, k), recsys_metrics.hit_rate(scores, heldout, k=k, reduction="none")
    )


def test_recall_is_not_the_plain_recall():
    # 3 held-out items, k = 2, one hit: ours 1/min(2, 3) = 0.5, plain recall 1/3.
    top = torch.tensor([[0, 5]])
    heldout = torch.zeros(1, 6)
    heldout[0, [0, 1, 2]] = 1
    assert metrics.recall(top, heldout, 2).item() == 0.5
    assert recsys_metrics.recall(torch.tensor([[6.0, 1, 1, 1, 1, 5]]), heldout, k=2).item() == pytest.approx(1 / 3)


def test_coverage_blocks_on_a_hand_built_case():
    lists = np.array(
        [
            [0, 1, 2],  # block 1
            [0, 3, 4],
            [5, 6, EMPTY],  # block 2
            [5, 6, 7],
            [8, 9, 10],  # partial block: left out
        ]
    )
    # block 1: @1 {0} @2 {0,1,3} @3 {0,1,2,3,4}; block 2: @1 {5} @2 {5,6} @3 {5,6,7}
    np.testing.assert_allclose(run_metrics.coverage_curve(lists, 2), [1.0, 2.5, 4.0])
    assert run_metrics.coverage(lists, 2, block_size=2) == 2.5
    assert run_metrics.coverage(lists, 1, block_size=5) == 3.0  # one block: {0, 5, 8}
    with pytest.raises(ValueError, match="full block"):
        run_metrics.coverage_curve(lists, 6)
    with pytest.raises(ValueError, match="at least 4 items"):
        run_metrics.coverage(lists, 4, 2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n_users: st.tuples(
            st.lists(st.lists(st.integers(-1, 15), min_size=5, max_size=5), min_size=n_users, max_size=n_users),
            st.integers(1, n_users),
        )
    )
)
def test_coverage_curve_matches_brute_force(case):
    raw, block_size = case
    lists = [list(dict.fromkeys(row)) for row in raw]  # unique items per list (EMPTY may repeat)
    lists = np.array([row + [EMPTY] * (5 - len(row)) for row in lists])
    curve = run_metrics.coverage_curve(lists, block_size)
    for k in range(1, 6):
        assert curve[k - 1] == pytest.approx(brute_coverage(lists.tolist(), k, block_size))


def test_item_recall_counts_items_never_held_out_as_zero():
    hits = np.array([1, 0, 2, 0])
    heldout = np.array([2, 3, 2, 0])
    # per item 0.5, 0, 1, (no positives)
    assert run_metrics.item_recall(hits, heldout) == pytest.approx(((0.5 + 0 + 1 + 0) / 4, (0.5 + 0 + 1) / 3))
    with pytest.raises(ValueError, match="no item is held out"):
        run_metrics.item_recall(np.zeros(3), np.zeros(3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=15).filter(lambda x: sum(x) > 0))
def test_gini_matches_the_mean_absolute_difference(exposure):
    assert run_metrics.gini(np.array(exposure)) == pytest.approx(brute_gini(exposure), abs=1e-12)
    item_share, exposure_share = run_metrics.lorenz_curve(np.array(exposure))
    area = np.sum((exposure_share[1:] + exposure_share[:-1]) / 2 * np.diff(item_share))
    assert run_metrics.gini(np.array(exposure)) == pytest.approx(1 - 2 * area, abs=1e-12)


def test_gini_extremes():
    assert run_metrics.gini(np.full(7, 3)) == 0.0
    assert run_metrics.gini(np.array([0, 0, 0, 9])) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        run_metrics.gini(np.zeros(4))


def test_long_tail_boundary_and_ties():
    # total 20, share 0.2 -> at most 4 interactions: levels 1 (cumulative 2) and 2 (4) are in, 3 (10) is out
    assert run_metrics.long_tail_items(np.array([3, 1, 10, 2, 1, 3]), 0.2).tolist() == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]
    # a level that would pass the share is out as a whole, even if part of it would fit
    assert run_metrics.long_tail_items(np.array([2, 2, 2, 14]), 0.2).tolist() == [False, False, False, False]
    # items without interactions are always in
    assert run_metrics.long_tail_items(np.array([0, 0, 5, 5]), 0.2).tolist() == [True, True, False, False]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=20).filter(lambda x: sum(x) > 0), st.floats(0.05, 0.95))
def test_long_tail_matches_brute_force(popularity, share):
    total = sum(popularity)
    expected = [sum(p for p in popularity if p <= q) <= share * total for q in popularity]
    assert run_metrics.long_tail_items(np.array(popularity), share).tolist() == expected
