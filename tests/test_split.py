"""The Liang et al. (2018) split, checked against a plain, slow, literal pandas implementation of
the published procedure written here, and against properties computed independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semtail.datasets import DataError
from semtail.datasets.split import MATRICES, EmptySplitError, SplitParameters, heldout_draw, liang_split, sorted_codes
from synthetic_data import synthetic_ratings

ML = dict(threshold=3.5, min_uc=5, min_sc=0, n_heldout=15, seed=98765, test_prop=0.2)
MSD = dict(threshold=None, min_uc=8, min_sc=12, n_heldout=10, seed=98765, test_prop=0.2)


# ---------------------------------------------------------------------------------------- the reference


def get_count(tp: pd.DataFrame, column: str) -> pd.DataFrame:
    return tp[[column]].groupby(column, as_index=False).size()


def split_train_test_proportion(data: pd.DataFrame, test_prop: float, seed: int):
    tr_list, te_list = [], []
    np.random.seed(seed)
    for _, group in data.groupby("user"):
        n_items_u = len(group)
        if n_items_u >= 5:
            idx = np.zeros(n_items_u, dtype="bool")
            idx[np.random.choice(n_items_u, size=int(test_prop * n_items_u), replace=False).astype("int64")] = True
            tr_list.append(group[np.logical_not(idx)])
            te_list.append(group[idx])
        else:
            tr_list.append(group)
    empty = data.iloc[:0]
    return pd.concat([empty, *tr_list]), pd.concat([empty, *te_list])


def reference_split(raw: pd.DataFrame, threshold, min_uc, min_sc, n_heldout, seed, test_prop) -> dict:
    """Steps 1-5 exactly as published, returning id lists and dense 0/1 matrices."""
    tp = raw if threshold is None else raw[raw["rating"] > threshold]
    if min_sc > 0:
        itemcount = get_count(tp, "item")
        tp = tp[tp["item"].isin(itemcount["item"][itemcount["size"] >= min_sc])]
    if min_uc > 0:
        usercount = get_count(tp, "user")
        tp = tp[tp["user"].isin(usercount["user"][usercount["size"] >= min_uc])]
    unique_uid = get_count(tp, "user")["user"].to_numpy()
    np.random.seed(seed)
    unique_uid = unique_uid[np.random.permutation(unique_uid.size)]
    n_users = unique_uid.size
    tr_users = unique_uid[: n_users - n_heldout * 2]
    vd_users = unique_uid[n_users - n_heldout * 2 : n_users - n_heldout]
    te_users = unique_uid[n_users - n_heldout :]
    train_plays = tp.loc[tp["user"].isin(tr_users)]
    unique_sid = pd.unique(train_plays["item"])
    show2id = {sid: i for i, sid in enumerate(unique_sid)}

    def dense(plays, users):
        profile2id = {uid: i for i, uid in enumerate(users)}
        matrix = np.zeros((len(users), len(unique_sid)), dtype=np.int64)
        for user, item in zip(plays["user"], plays["item"]):
            matrix[profile2id[user], show2id[item]] = 1
        return matrix

    result = {"items": list(unique_sid), "train_users": list(tr_users), "train": dense(train_plays, tr_users)}
    for name, users in (("validation", vd_users), ("test", te_users)):
        plays = tp.loc[tp["user"].isin(users)]
        plays = plays.loc[plays["item"].isin(unique_sid)]
        plays_tr, plays_te = split_train_test_proportion(plays, test_prop, seed)
        result[f"{name}_users"] = list(users)
        result[f"{name}_tr"] = dense(plays_tr, users)
        result[f"{name}_te"] = dense(plays_te, users)
    return result


def as_categorical_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the MSD reader gives it: ids as a Categorical whose categories are unsorted."""
    out = frame.copy()
    for column in ("user", "item"):
        categories = pd.unique(out[column])  # order of appearance, not sorted
        out[column] = pd.Categorical(out[column], categories=categories)
    return out


# ---------------------------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    "data, settings",
    [
        (dict(seed=1), ML),
        (dict(seed=2, n_users=200, mean_per_user=12), {**ML, "seed": 7, "n_heldout": 30}),
        (dict(seed=3, ratings=(1, 1, 2, 3, 7), string_ids=True), MSD),
        (dict(seed=4), {**ML, "min_sc": 10, "min_uc": 3, "test_prop": 0.3}),
        (dict(seed=5), {**ML, "min_uc": 0}),
    ],
    ids=["ml", "ml-other-seed", "msd-strings", "both-filters", "no-user-filter"],
)
def test_split_equals_the_literal_reference(data, settings):
    raw = synthetic_ratings(**data)
    expected = reference_split(raw, **settings)
    frames = [raw] + ([as_categorical_strings(raw)] if data.get("string_ids") else [])
    for frame in frames:
        split = liang_split(frame, SplitParameters(**settings), "synthetic")
        assert split.item_ids.tolist() == expected["items"]
        for part in ("train", "validation", "test"):
            assert split.users[part].tolist() == expected[f"{part}_users"]
        for name in ("train", "validation_tr", "validation_te", "test_tr", "test_te"):
            matrix = split.matrices[name]
            assert matrix.format == "csr" and set(np.unique(matrix.data)) <= {1.0}
            np.testing.assert_array_equal(matrix.toarray(), expected[name], err_msg=name)


def test_heldout_draw_equals_the_per_user_loop_draw_for_draw():
    rng = np.random.default_rng(0)
    # Users of every size around the threshold of 5, interleaved, codes not in row order.
    sizes = [1, 4, 5, 6, 9, 10, 13, 50, 2, 7, 101, 5, 3, 33]
    user = rng.permutation(np.repeat(rng.permutation(len(sizes)) * 3 + 1, sizes))
    frame = pd.DataFrame({"user": user, "row": np.arange(len(user))})
    for test_prop, seed in ((0.2, 98765), (0.5, 1), (0.35, 12345)):
        reference = np.zeros(len(user), dtype=bool)
        _, heldout = split_train_test_proportion(frame, test_prop, seed)
        reference[heldout["row"].to_numpy()] = True
        np.testing.assert_array_equal(heldout_draw(user, test_prop, seed), reference)


def test_heldout_draw_leaves_the_global_generator_alone():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    heldout_draw(np.repeat([3, 1, 2], [6, 7, 8]), 0.2, 98765)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# ---------------------------------------------------------------------------------------- properties


@pytest.fixture(scope="module")
def ml_split():
    raw = synthetic_ratings(seed=11, n_users=250, n_items=90)
    return raw, liang_split(raw, SplitParameters(**ML), "synthetic")


def test_counts_and_disjoint_users(ml_split):
    raw, split = ml_split
    liked = raw[raw["rating"] > 3.5]
    per_user = liked.groupby("user").size()
    kept = set(per_user.index[per_user >= 5])
    parts = {name: set(split.users[name].tolist()) for name in ("train", "validation", "test")}
    assert len(parts["validation"]) == len(parts["test"]) == 15
    assert len(parts["train"]) == len(kept) - 30
    assert parts["train"] | parts["validation"] | parts["test"] == kept
    assert not (
        parts["train"] & parts["validation"] or parts["train"] & parts["test"] or parts["validation"] & parts["test"]
    )
    for name, part in (("train", "train"), ("validation_tr", "validation"), ("test_te", "test")):
        assert split.matrices[name].shape == (len(split.users[part]), len(split.item_ids))


def test_item_order_and_train_rows(ml_split):
    raw, split = ml_split
    liked = raw[raw["rating"] > 3.5]
    train_rows = liked[liked["user"].isin(set(split.users["train"].tolist()))]
    first_seen = []
    for item in train_rows["item"]:
        if item not in first_seen:
            first_seen.append(item)
    assert split.item_ids.tolist() == first_seen
    column = {item: j for j, item in enumerate(first_seen)}
    for row, user in enumerate(split.users["train"][:20].tolist()):
        items = liked.loc[liked["user"] == user, "item"]
        assert sorted(split.matrices["train"][row].indices.tolist()) == sorted(column[i] for i in items)


def test_heldout_proportions(ml_split):
    raw, split = ml_split
    liked = raw[raw["rating"] > 3.5]
    known = set(split.item_ids.tolist())
    for part in ("validation", "test"):
        fold_in, heldout = split.matrices[f"{part}_tr"], split.matrices[f"{part}_te"]
        assert fold_in.multiply(heldout).nnz == 0
        for row, user in enumerate(split.users[part].tolist()):
            n = int(liked.loc[liked["user"] == user, "item"].isin(known).sum())
            expected_heldout = int(0.2 * n) if n >= 5 else 0
            assert heldout[row].nnz == expected_heldout
            assert fold_in[row].nnz == n - expected_heldout


def test_users_whose_items_all_vanish_keep_an_empty_row():
    # Every user rates only items of their own, so no validation or test item is a training item.
    raw = pd.DataFrame(
        [(u, 100 * u + k, 5.0) for u in range(1, 13) for k in range(5)], columns=["user", "item", "rating"]
    )
    split = liang_split(raw, SplitParameters(**{**ML, "n_heldout": 2}), "synthetic")
    assert len(split.item_ids) == 8 * 5
    for part in ("validation", "test"):
        assert len(split.users[part]) == 2
        for suffix in ("tr", "te"):
            matrix = split.matrices[f"{part}_{suffix}"]
            assert matrix.shape == (2, 40) and matrix.nnz == 0
    assert split.dropped_unknown_items == {"validation": 10, "test": 10}


def test_same_seed_same_split_other_seed_other_split():
    raw = synthetic_ratings(seed=12)
    first = liang_split(raw, SplitParameters(**ML), "synthetic")
    again = liang_split(raw.copy(), SplitParameters(**ML), "synthetic")
    other = liang_split(raw, SplitParameters(**{**ML, "seed": 1}), "synthetic")
    for name in first.matrices:
        assert (first.matrices[name] != again.matrices[name]).nnz == 0
    assert first.users["test"].tolist() == again.users["test"].tolist()
    assert first.users["test"].tolist() != other.users["test"].tolist()


# ---------------------------------------------------------------------------------------- edges


@pytest.mark.parametrize(
    "settings, named",
    [
        ({**ML, "threshold": 5.0}, r"synthetic: no interactions left after the filter rating > 5.0"),
        ({**ML, "min_sc": 10_000}, r"after the filter items with >= 10000 interactions \(min_sc\)"),
        ({**ML, "min_uc": 10_000}, r"after the filter users with >= 10000 interactions \(min_uc\)"),
        ({**ML, "n_heldout": 500}, r"too few for n_heldout=500"),
    ],
)
def test_empty_results_name_the_filter(settings, named):
    with pytest.raises(EmptySplitError, match=named):
        liang_split(synthetic_ratings(seed=13), SplitParameters(**settings), "synthetic")


@pytest.mark.parametrize(
    "values",
    [
        np.array([30, 10, 20, 10, 30]),
        np.array([3_000_000_000, 7, 3_000_000_000]),  # too sparse for a lookup table
        np.array([-4, 2, -4]),
        np.array(["b", "a", "c", "a"], dtype=object),
    ],
)
def test_sorted_codes_number_values_in_groupby_order(values):
    codes, uniques = sorted_codes(pd.Series(values))
    groupby_order = pd.Series(values).groupby(values).size().index.tolist()
    assert uniques.tolist() == groupby_order
    assert uniques[codes].tolist() == values.tolist()


def test_sorted_codes_of_a_categorical_ignore_category_order():
    column = pd.Series(pd.Categorical(["b", "c", "a", "b"], categories=["c", "b", "a", "z"]))
    codes, uniques = sorted_codes(column)
    assert uniques[codes].tolist() == ["b", "c", "a", "b"]
    assert codes.tolist() == [1, 2, 0, 1] and uniques.tolist() == ["a", "b", "c"]  # unused 'z' dropped


def repeated_pairs_data() -> pd.DataFrame:
    """40 users rating items 1-10, then each of them again on items 1-3 (a higher rating); user 1
    rates item 11 below the threshold, then above it; user 2 rates item 12 below it twice."""
    rows = [(u, i, 4.0) for u in range(1, 41) for i in range(1, 11)]
    rows += [(u, i, 5.0) for u in range(1, 41) for i in range(1, 4)]
    rows += [(1, 11, 2.0), (2, 12, 1.0), (1, 11, 4.5), (2, 12, 3.0)]
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


@pytest.mark.parametrize("string_ids", [False, True], ids=["integer-ids", "categorical-ids"])
def test_repeated_pairs_are_merged_before_the_split(string_ids):
    """A (user, item) pair on several lines counts once, before any filter counts or the held-out
    draw: as a positive when any of its lines is one, at its first such line. The split is the
    reference's on the data merged so (written out here with pandas), so no pair of a held-out user
    sits on both sides. (Merged after the split, the pairs of items 1-3 fell on both sides.)"""
    raw = repeated_pairs_data()
    settings = {**ML, "n_heldout": 5, "min_uc": 3}
    positives = raw[raw["rating"] > settings["threshold"]]
    merged = positives.drop_duplicates(["user", "item"], keep="first")
    assert len(positives) - len(merged) == 40 * 3
    expected = reference_split(merged, **settings)
    frame = as_categorical_strings(raw) if string_ids else raw
    split = liang_split(frame, SplitParameters(**settings), "synthetic")
    assert split.item_ids.tolist() == expected["items"]
    for name in MATRICES:
        np.testing.assert_array_equal(split.matrices[name].toarray(), expected[name], err_msg=name)
        assert split.rows[name] == expected[name].sum(), name
    for part in ("validation", "test"):
        both = split.matrices[f"{part}_tr"].multiply(split.matrices[f"{part}_te"])
        assert both.nnz == 0 and split.matrices[f"{part}_te"].nnz > 0, part
    assert split.repeated_pairs == 120 and split.first_repeated_pair == (1, 1)
    assert [type(value) for value in split.first_repeated_pair] == [int, int]  # not numpy scalars
    assert split.filtering[2] == {
        "step": "repeated (user, item) pairs merged",
        "interactions": len(merged),
        "users": 40,
        "items": 11,
    }


def test_no_merge_step_where_no_pair_repeats():
    split = liang_split(synthetic_ratings(seed=15), SplitParameters(**ML), "synthetic")
    assert split.repeated_pairs == 0 and split.first_repeated_pair is None
    assert "merged" not in " ".join(step["step"] for step in split.filtering)


@pytest.mark.parametrize("settings", [ML, MSD, {**ML, "min_sc": 10}], ids=["ml", "msd", "ml-min_sc"])
def test_filtering_steps_report_the_sizes_after_each_filter(settings):
    raw = synthetic_ratings(seed=14, ratings=(1, 2, 3, 4, 5), n_users=200)
    split = liang_split(raw, SplitParameters(**settings), "synthetic")

    def sizes(frame):
        return {"interactions": len(frame), "users": frame["user"].nunique(), "items": frame["item"].nunique()}

    expected, tp = [{"step": "raw", **sizes(raw)}], raw
    if settings["threshold"] is not None:
        tp = tp[tp["rating"] > settings["threshold"]]
        expected.append({"step": f"rating > {settings['threshold']}", **sizes(tp)})
    if settings["min_sc"]:
        per_item = tp.groupby("item")["item"].transform("size")
        tp = tp[per_item >= settings["min_sc"]]
        expected.append({"step": f"items with >= {settings['min_sc']} interactions (min_sc)", **sizes(tp)})
    per_user = tp.groupby("user")["user"].transform("size")
    tp = tp[per_user >= settings["min_uc"]]
    expected.append({"step": f"users with >= {settings['min_uc']} interactions (min_uc)", **sizes(tp)})
    assert split.filtering == expected


# ---------------------------------------------------------------------------------------- parameters


def test_parameters_from_config_keep_real_integers():
    parameters = SplitParameters.from_config({**ML, "seed": 4294967295}, "datasets.ml-20m.preprocess")
    assert parameters == SplitParameters(**{**ML, "seed": 4294967295})
    assert [type(getattr(parameters, k)) for k in ("min_uc", "min_sc", "n_heldout", "seed")] == [int] * 4


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("n_heldout", 20.0, "must be an integer, got 20.0"),
        ("seed", 98765.0, "must be an integer, got 98765.0"),
        ("min_uc", True, "must be an integer, got True"),
        ("min_sc", "0", "must be an integer, got '0'"),
        ("seed", 2**32, "must lie in 0..4294967295 (numpy's RandomState), got 4294967296"),
        ("seed", -1, "must lie in 0..4294967295"),
        ("threshold", "3.5", "must be a number, got '3.5'"),
        ("test_prop", False, "must be a number, got False"),
    ],
)
def test_parameters_of_the_wrong_type_are_named(key, value, problem):
    with pytest.raises(DataError) as error:
        SplitParameters.from_config({**ML, key: value}, "datasets.ml-20m.preprocess")
    assert str(error.value).startswith(f"datasets.ml-20m.preprocess.{key}: {problem}")
