"""The strong-generalisation split of Liang, Krishnan, Hoffman and Jebara (2018, "Variational
Autoencoders for Collaborative Filtering"), followed to the letter, random draws included:

1. keep interactions with rating > threshold (no filter when threshold is None, as it must be for
   data without ratings, where every row is a positive); a (user, item) pair on several of the kept
   rows is kept once, at its first row (our addition: the published datasets have no such pairs,
   and a pair on both sides of a held-out split would be scored as its own answer);
2. keep items with >= min_sc interactions (if min_sc > 0), then users with >= min_uc (if min_uc > 0);
3. order users by id (as a groupby does), seed the legacy generator, permute them; the last
   2·n_heldout become validation users, then test users; the rest are training users;
4. the columns are the training users' distinct items in order of first appearance; validation and
   test interactions on other items are dropped;
5. for validation and for test users separately: seed again, go over the users in id order, and hold
   out int(test_prop·n) of each user's n >= 5 interactions, drawn with choice(n, size, replace=False).

Everything is vectorised except step 5's draws, which must call the generator user by user, in the
same order and with the same arguments, to give the same stream. `np.random.RandomState(seed)` is the
generator that `np.random.seed(seed)` seeds, so the draws equal the reference's without touching
global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from semtail.datasets import DataError

log = logging.getLogger(__name__)

PARTS = ("train", "validation", "test")
MATRICES = ("train", "validation_tr", "validation_te", "test_tr", "test_te")
MIN_INTERACTIONS_TO_HOLD_OUT = 5
INTEGER_KEYS = ("min_uc", "min_sc", "n_heldout", "seed")
MAX_SEED = 2**32 - 1  # the largest seed np.random.RandomState accepts
MERGE_STEP = "repeated (user, item) pairs merged"


class EmptySplitError(DataError):
    pass


@dataclass(frozen=True)
class SplitParameters:
    threshold: float | None
    min_uc: int
    min_sc: int
    n_heldout: int
    seed: int
    test_prop: float

    @classmethod
    def from_config(cls, values: dict, where: str = "preprocess") -> SplitParameters:
        """`threshold` may be left out (no threshold); every other key is required."""
        names = set(cls.__dataclass_fields__)
        values = {"threshold": None, **values}
        missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
        if missing or unknown:
            raise DataError(f"{where}: missing keys {missing}, unknown keys {unknown}")
        for key in INTEGER_KEYS:
            if not _is_integer(values[key]):
                raise DataError(f"{where}.{key}: must be an integer, got {values[key]!r}")
        for key in ("threshold", "test_prop"):
            if not _is_number(values[key]) and not (key == "threshold" and values[key] is None):
                raise DataError(f"{where}.{key}: must be a number, got {values[key]!r}")
        parameters = cls(**{k: int(v) if k in INTEGER_KEYS else v for k, v in values.items()})
        if parameters.n_heldout < 1 or parameters.min_uc < 0 or parameters.min_sc < 0:
            raise DataError(f"{where}: n_heldout must be >= 1 and min_uc, min_sc >= 0, got {values}")
        if not 0 <= parameters.seed <= MAX_SEED:
            raise DataError(f"{where}.seed: must lie in 0..{MAX_SEED} (numpy's RandomState), got {parameters.seed}")
        if not 0 < parameters.test_prop < 1:
            raise DataError(f"{where}: test_prop must lie in (0, 1), got {parameters.test_prop}")
        return parameters


def _is_integer(value) -> bool:
    """A real integer: 20 but not 20.0 (which YAML and JSON Schema let through) nor True."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass
class Split:
    item_ids: np.ndarray  # raw item ids in column order
    users: dict[str, np.ndarray]  # PARTS -> raw user ids in row order
    matrices: dict[str, sp.csr_matrix]  # MATRICES -> binary users × items
    filtering: list[dict] = field(default_factory=list)  # interactions, users, items after each step
    rows: dict[str, int] = field(default_factory=dict)  # MATRICES -> interactions before binarising
    dropped_unknown_items: dict[str, int] = field(default_factory=dict)  # validation/test rows dropped in step 4
    # rows merged into an earlier row of the same (user, item) pair in step 1, and that pair's raw ids
    repeated_pairs: int = 0
    first_repeated_pair: tuple | None = None


def sorted_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes numbering the distinct values of `column` in sorted order (the order of a groupby on it),
    and the values themselves, so that values == uniques[codes]."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        used = np.bincount(codes, minlength=len(column.cat.categories)) > 0
        categories = np.asarray(column.cat.categories, dtype=object)[used]
        order = np.argsort(categories, kind="stable")
        rank = np.full(len(used), -1, dtype=np.int32)
        rank[np.flatnonzero(used)[order]] = np.arange(len(order), dtype=np.int32)
        return rank[codes], categories[order]
    values = column.to_numpy()
    if np.issubdtype(values.dtype, np.integer) and len(values):
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high < 4 * len(values) + 1_000_000:  # ids dense enough for a lookup table
            present = np.zeros(high + 1, dtype=bool)
            present[values] = True
            lookup = (np.cumsum(present) - 1).astype(np.int32)
            return lookup[values], np.flatnonzero(present).astype(values.dtype)
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int32), np.asarray(uniques)


def first_of_each_pair(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray | None:
    """Which rows are the first of their (user, item) pair (codes); None when no pair repeats, as in
    the published datasets, which a sort tells at a few times less cost than hashing every pair."""
    pair = user.astype(np.int64) * n_items + item
    pair.sort()
    if not np.any(pair[1:] == pair[:-1]):
        return None
    pair = user.astype(np.int64) * n_items + item
    return ~pd.Series(pair, copy=False).duplicated(keep="first").to_numpy()


def filter_interactions(
    user: np.ndarray, item: np.ndarray, rating: np.ndarray | None, parameters: SplitParameters, dataset: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict], tuple | None]:
    """Steps 1-2 on codes from sorted_codes: the kept rows' users and items (in raw order), the
    interactions per user after filtering, the sizes after each step (a step MERGE_STEP only where
    pairs repeat), and the rows merged with the codes of the first repeated pair (None when no pair
    repeats). Raises when nothing is left. `rating` is None for data without ratings, which takes
    no threshold."""
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    user_counts = item_counts = None
    steps = [{"step": "raw", "interactions": len(user), "users": n_users, "items": n_items}]

    def apply(kept: np.ndarray, description: str) -> None:
        nonlocal user, item, user_counts, item_counts
        user, item = user[kept], item[kept]
        user_counts, item_counts = np.bincount(user, minlength=n_users), np.bincount(item, minlength=n_items)
        steps.append(
            {
                "step": description,
                "interactions": len(user),
                "users": int(np.count_nonzero(user_counts)),
                "items": int(np.count_nonzero(item_counts)),
            }
        )
        if len(user) == 0:
            raise EmptySplitError(
                f"{dataset}: no interactions left after the filter {description} "
                f"({steps[-2]['interactions']} before it); check the preprocess settings of {dataset}"
            )

    if parameters.threshold is not None:
        if rating is None:
            raise DataError(
                f"datasets.{dataset}.preprocess.threshold is {parameters.threshold}, but the data has no ratings "
                "(every row is a positive): set it to null or leave it out"
            )
        apply(rating > parameters.threshold, f"rating > {parameters.threshold}")
    first = first_of_each_pair(user, item, n_items)
    repeated = None
    if first is not None:
        at = int(np.argmin(first))
        repeated = (int(np.count_nonzero(~first)), (int(user[at]), int(item[at])))
        apply(first, MERGE_STEP)
    if parameters.min_sc > 0:
        item_counts = np.bincount(item, minlength=n_items) if item_counts is None else item_counts
        apply(item_counts[item] >= parameters.min_sc, f"items with >= {parameters.min_sc} interactions (min_sc)")
    if parameters.min_uc > 0:
        user_counts = np.bincount(user, minlength=n_users) if user_counts is None else user_counts
        apply(user_counts[user] >= parameters.min_uc, f"users with >= {parameters.min_uc} interactions (min_uc)")
    user_counts = np.bincount(user, minlength=n_users) if user_counts is None else user_counts
    return user, item, user_counts, steps, repeated


def heldout_draw(user: np.ndarray, test_prop: float, seed: int) -> np.ndarray:
    """Step 5 for one part: which rows are held out. `user` holds the rows' user codes (ordered as a
    groupby orders users) in the rows' original order."""
    order = np.argsort(user, kind="stable")  # each user's rows together, users in groupby order
    starts = np.flatnonzero(np.r_[True, np.diff(user[order]) != 0]) if len(user) else np.empty(0, np.int64)
    lengths = np.diff(np.r_[starts, len(user)])
    heldout_in_order = np.zeros(len(user), dtype=bool)
    generator = np.random.RandomState(seed)
    for start, n in zip(starts.tolist(), lengths.tolist()):
        if n >= MIN_INTERACTIONS_TO_HOLD_OUT:
            picked = generator.choice(n, size=int(test_prop * n), replace=False)
            heldout_in_order[start + picked] = True
    heldout = np.empty(len(user), dtype=bool)
    heldout[order] = heldout_in_order
    return heldout


def binary_matrix(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=shape)
    matrix.sum_duplicates()
    matrix.sort_indices()
    matrix.data[:] = 1.0
    return matrix


def users_of_parts(kept_users: np.ndarray, parameters: SplitParameters, dataset: str) -> dict[str, np.ndarray]:
    """The users left after filtering (codes, in groupby order), shuffled by the seed and cut into
    the training users and n_heldout validation and n_heldout test users."""
    n_users, n_heldout = len(kept_users), parameters.n_heldout
    if n_users <= 2 * n_heldout:
        raise EmptySplitError(
            f"{dataset}: {n_users} users left after filtering, too few for n_heldout={n_heldout} validation "
            f"and {n_heldout} test users with any training users left"
        )
    shuffled = kept_users[np.random.RandomState(parameters.seed).permutation(n_users)]
    return {
        "train": shuffled[: n_users - 2 * n_heldout],
        "validation": shuffled[n_users - 2 * n_heldout : n_users - n_heldout],
        "test": shuffled[n_users - n_heldout :],
    }


def liang_split(frame: pd.DataFrame, parameters: SplitParameters, dataset: str) -> Split:
    """Steps 1-5 on raw interactions (columns user, item and, unless every row is a positive,
    rating, in raw order). The frame is not needed after its ids are coded: pass it without keeping a
    reference, and its memory is freed early."""
    if len(frame) == 0:
        raise EmptySplitError(f"{dataset}: the raw data has no interactions")
    user, user_ids = sorted_codes(frame["user"])
    item, item_ids = sorted_codes(frame["item"])
    rating = frame["rating"].to_numpy() if "rating" in frame else None
    del frame
    user, item, user_counts, steps, repeated = filter_interactions(user, item, rating, parameters, dataset)
    del rating

    part_users = users_of_parts(np.flatnonzero(user_counts), parameters, dataset)
    part_of_user = np.full(len(user_ids), -1, dtype=np.int8)
    row_of_user = np.zeros(len(user_ids), dtype=np.int32)
    for index, name in enumerate(PARTS):
        part_of_user[part_users[name]] = index
        row_of_user[part_users[name]] = np.arange(len(part_users[name]), dtype=np.int32)
    part = part_of_user[user]

    in_train = part == 0
    train_items = pd.unique(item[in_train])
    column_of_item = np.full(len(item_ids), -1, dtype=np.int32)
    column_of_item[train_items] = np.arange(len(train_items), dtype=np.int32)
    column = column_of_item[item]
    n_items = len(train_items)

    matrices = {
        "train": binary_matrix(row_of_user[user[in_train]], column[in_train], (len(part_users["train"]), n_items))
    }
    rows = {"train": int(in_train.sum())}
    dropped = {}
    for index, name in ((1, "validation"), (2, "test")):
        in_part = part == index
        known = in_part & (column >= 0)
        dropped[name] = int(in_part.sum() - known.sum())
        part_user, part_column = user[known], column[known]
        heldout = heldout_draw(part_user, parameters.test_prop, parameters.seed)
        shape = (len(part_users[name]), n_items)
        for suffix, selected in (("tr", ~heldout), ("te", heldout)):
            matrices[f"{name}_{suffix}"] = binary_matrix(row_of_user[part_user[selected]], part_column[selected], shape)
            rows[f"{name}_{suffix}"] = int(selected.sum())
    return Split(
        item_ids=item_ids[train_items],
        users={name: user_ids[part_users[name]] for name in PARTS},
        matrices=matrices,
        filtering=steps,
        rows=rows,
        dropped_unknown_items=dropped,
        repeated_pairs=0 if repeated is None else repeated[0],
        first_repeated_pair=None
        if repeated is None
        else (user_ids[[repeated[1][0]]].tolist()[0], item_ids[[repeated[1][1]]].tolist()[0]),
    )
