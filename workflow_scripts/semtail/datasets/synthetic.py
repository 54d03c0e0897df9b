"""The `synthetic` source: user–item positives of a given shape, generated deterministically from a
seed, for rehearsing the paper's run at its datasets' sizes without their data (configs/rehearsal.yaml).

The shape: exactly `users` users, `items` items and `interactions` distinct (user, item) pairs, each
written with rating 5 (a positive under any threshold below 5). Item popularity and user activity
are long-tailed: degree_r = floor + extra_r with extra_r ∝ (r + 1)^-a over the ranks r, the exponent
a chosen so that the most popular 20% of items hold `item_head_share` of the positives (the most
active 20% of users `user_head_share`); every item has at least `min_item_positives` and every user
at least `min_user_positives`, so that filters at or below those floors (`min_sc`, `min_uc`) drop
nothing and the split keeps every user and, for floors of about 10 or more, every item. The pairs are a
random bipartite graph with exactly these degrees: every item's positives dealt out at random to the
users' slots, then slots that repeat a pair swapped with random others until no pair repeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from semtail.datasets import DataError
from semtail.files import atomic_path

log = logging.getLogger(__name__)

HEAD_FRACTION = 0.2  # the head whose share of the positives *_head_share sets
MAX_DEGREE_SHARE = 0.25  # no item reaches more than a quarter of the users, no user more than a quarter of the items
MAX_SWAP_ROUNDS = 200
FILE_NAME = "synthetic.tsv"
HEADER = ("user", "item", "rating")
KEYS = {
    "users": int,
    "items": int,
    "interactions": int,
    "seed": int,
    "item_head_share": float,
    "user_head_share": float,
    "min_item_positives": int,
    "min_user_positives": int,
}
DEFAULTS = {"item_head_share": 0.8, "user_head_share": 0.5, "min_item_positives": 10, "min_user_positives": 5}


@dataclass(frozen=True)
class Shape:
    users: int
    items: int
    interactions: int
    seed: int
    item_head_share: float = DEFAULTS["item_head_share"]
    user_head_share: float = DEFAULTS["user_head_share"]
    min_item_positives: int = DEFAULTS["min_item_positives"]
    min_user_positives: int = DEFAULTS["min_user_positives"]

    @classmethod
    def from_config(cls, entry, where: str) -> Shape:
        """`entry`: the source's `synthetic:` mapping; `where` names it in errors."""
        if not isinstance(entry, dict):
            raise DataError(f"{where}: a mapping of users, items, interactions and seed, got {entry!r}")
        unknown = sorted(set(entry) - set(KEYS))
        missing = sorted({"users", "items", "interactions", "seed"} - set(entry))
        if unknown or missing:
            raise DataError(f"{where}: unknown keys {unknown}, missing keys {missing} (known: {sorted(KEYS)})")
        values = {}
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or KEYS[key](value) != value:
                raise DataError(f"{where}.{key}: {value!r} is not a{'n integer' if KEYS[key] is int else ' number'}")
            values[key] = KEYS[key](value)
        shape = cls(**values)
        shape.check(where)
        return shape

    def check(self, where: str) -> None:
        if min(self.users, self.items, self.min_item_positives, self.min_user_positives) < 1 or self.seed < 0:
            raise DataError(f"{where}: users, items and the minimum positives must be at least 1, the seed at least 0")
        for key in ("item_head_share", "user_head_share"):
            if not HEAD_FRACTION <= getattr(self, key) < 1:
                raise DataError(f"{where}.{key}: {getattr(self, key)} is not in [{HEAD_FRACTION}, 1)")
        low = max(self.items * self.min_item_positives, self.users * self.min_user_positives)
        high = min(self.items * int(MAX_DEGREE_SHARE * self.users), self.users * int(MAX_DEGREE_SHARE * self.items))
        if not low <= self.interactions <= high:
            raise DataError(
                f"{where}.interactions: {self.interactions} is outside [{low}, {high}]: at least every user's and "
                f"every item's minimum positives, at most {MAX_DEGREE_SHARE:.0%} of the users for an item and of "
                "the items for a user"
            )
        if (
            self.min_item_positives > MAX_DEGREE_SHARE * self.users
            or self.min_user_positives > MAX_DEGREE_SHARE * self.items
        ):
            raise DataError(f"{where}: a minimum of positives above {MAX_DEGREE_SHARE:.0%} of the users or items")


def head_share(degrees: np.ndarray) -> float:
    """The share of the total held by the largest HEAD_FRACTION of the degrees."""
    ordered = np.sort(degrees)[::-1]
    return float(ordered[: max(1, int(round(HEAD_FRACTION * len(ordered))))].sum() / ordered.sum())


def _degrees_for(exponent: float, count: int, total: int, floor: int, cap: int) -> np.ndarray:
    """count degrees summing to total, each in [floor, cap], the part above the floor ∝ (rank+1)^-exponent."""
    weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
    extra_total = total - count * floor
    capped = np.zeros(count, dtype=bool)
    extra = np.zeros(count)
    for _ in range(count):  # water-filling: the capped keep cap - floor, the rest share what is left
        free = extra_total - (cap - floor) * capped.sum()
        extra = np.where(capped, cap - floor, free * weights / weights[~capped].sum())
        newly = (extra > cap - floor) & ~capped
        if not newly.any():
            break
        capped |= newly
    whole = np.floor(extra).astype(np.int64)
    short = extra_total - int(whole.sum())
    if short:  # largest remainders first, among those below the cap
        remainder = np.where(whole < cap - floor, extra - whole, -1.0)
        whole[np.argsort(-remainder, kind="stable")[:short]] += 1
    return floor + whole


def long_tailed_degrees(count: int, total: int, floor: int, cap: int, share: float) -> np.ndarray:
    """Degrees (largest first) whose top HEAD_FRACTION holds `share` of total, by bisection on the exponent."""
    low, high = 0.0, 8.0
    for _ in range(60):
        middle = (low + high) / 2
        if head_share(_degrees_for(middle, count, total, floor, cap)) < share:
            low = middle
        else:
            high = middle
    return _degrees_for(high, count, total, floor, cap)


def generate_pairs(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every positive, ordered by user then item; ids 0..users-1 and 0..items-1, in
    random order of activity and popularity."""
    rng = np.random.default_rng(shape.seed)
    item_degrees = long_tailed_degrees(
        shape.items,
        shape.interactions,
        shape.min_item_positives,
        int(MAX_DEGREE_SHARE * shape.users),
        shape.item_head_share,
    )
    user_degrees = long_tailed_degrees(
        shape.users,
        shape.interactions,
        shape.min_user_positives,
        int(MAX_DEGREE_SHARE * shape.items),
        shape.user_head_share,
    )
    users = np.repeat(np.arange(shape.users, dtype=np.int64), user_degrees)
    items = rng.permutation(np.repeat(np.arange(shape.items, dtype=np.int64), item_degrees))
    for round_ in range(MAX_SWAP_ROUNDS):
        keys = users * shape.items + items
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeated = order[1:][ordered[1:] == ordered[:-1]]
        if len(repeated) == 0:
            break
        if round_ % 10 == 0:
            log.info("synthetic pairs: %d repeated after %d rounds of swaps", len(repeated), round_)
        # Swap each repeated slot's item with a random slot's, where neither new pair exists yet
        # and no two swaps of the round make the same pair: the repeats only ever decrease.
        partners = rng.integers(0, len(items), size=len(repeated))
        new_here = users[repeated] * shape.items + items[partners]
        new_there = users[partners] * shape.items + items[repeated]
        found = np.searchsorted(ordered, np.concatenate([new_here, new_there]))
        found = np.minimum(found, len(ordered) - 1)
        absent = ordered[found] != np.concatenate([new_here, new_there])
        made = np.concatenate([new_here, new_there])
        values, counts = np.unique(made, return_counts=True)
        single = counts[np.searchsorted(values, made)] == 1
        slots_used = np.concatenate([repeated, partners])
        used_values, used_counts = np.unique(slots_used, return_counts=True)
        distinct = used_counts[np.searchsorted(used_values, slots_used)] == 1
        ok = absent & single & distinct
        accept = ok[: len(repeated)] & ok[len(repeated) :]
        slots, partners = repeated[accept], partners[accept]
        items[slots], items[partners] = items[partners], items[slots].copy()
    else:
        raise DataError(f"synthetic shape {shape}: pairs still repeat after {MAX_SWAP_ROUNDS} rounds of swaps")
    user_ids = rng.permutation(shape.users)
    item_ids = rng.permutation(shape.items)
    users, items = user_ids[users], item_ids[items]
    order = np.lexsort((items, users))
    return users[order], items[order]


def write_synthetic(shape: Shape, raw_dir: Path) -> Path:
    """Generates the shape's positives into raw_dir/synthetic.tsv (tab-separated user item rating,
    with a header), written to a temporary file and renamed when complete."""
    users, items = generate_pairs(shape)
    table = pa.table({"user": users, "item": items, "rating": np.full(len(users), 5, dtype=np.int8)})
    path = Path(raw_dir) / FILE_NAME
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        handle.write(("\t".join(HEADER) + "\n").encode())
        pacsv.write_csv(
            table,
            handle,
            write_options=pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"),
        )
    log.info("wrote %d synthetic positives of %d users and %d items to %s", len(users), shape.users, shape.items, path)
    return path
