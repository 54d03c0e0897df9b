"""The `synthetic` source (semtail/datasets/synthetic.py): generated through the download stage,
deterministic, of the exact shape asked for, long-tailed, and kept whole by the paper's filters."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from semtail.datasets import DataError
from semtail.datasets.formats import read_interactions
from semtail.datasets.sources import Source, fetch_dataset
from semtail.datasets.split import SplitParameters, liang_split
from semtail.datasets.synthetic import Shape, generate_pairs, head_share, long_tailed_degrees

SHAPE = {"users": 3000, "items": 400, "interactions": 60_000, "seed": 7}


def fetch(tmp_path, shape, name="toy"):
    provenance_file = tmp_path / name / "provenance.json"
    provenance = fetch_dataset(name, [{"synthetic": shape, "format": "synthetic"}], provenance_file)
    return provenance, provenance_file.parent / provenance["files"][0]


def test_generated_file_has_the_exact_shape_and_is_recorded(tmp_path):
    provenance, path = fetch(tmp_path, SHAPE)
    frame = read_interactions("synthetic", [path])
    pairs = set(zip(frame["user"].tolist(), frame["item"].tolist()))
    assert len(frame) == 60_000 and len(pairs) == 60_000  # no pair twice
    assert frame["user"].nunique() == 3000 and frame["item"].nunique() == 400
    assert set(frame["rating"].unique()) == {5.0}
    assert provenance["format"] == "synthetic" and provenance["source"]["synthetic"] == SHAPE
    assert provenance["fetched"]["generated"] is True
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["file_checksums"][path.name]["sha256"] == sha256


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    _, first = fetch(tmp_path, SHAPE, "a")
    _, again = fetch(tmp_path, SHAPE, "b")
    _, other = fetch(tmp_path, {**SHAPE, "seed": 8}, "c")
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_long_tails_and_floors():
    users, items = generate_pairs(Shape(**SHAPE))
    item_degrees, user_degrees = np.bincount(items), np.bincount(users)
    # The 80 most popular of 400 items hold 80% of the 60,000 positives, the 600 most active of
    # 3000 users half of them (to the rounding of one positive).
    assert abs(np.sort(item_degrees)[::-1][:80].sum() - 48_000) <= 80
    assert abs(np.sort(user_degrees)[::-1][:600].sum() - 30_000) <= 600
    assert item_degrees.min() >= 10 and user_degrees.min() >= 5
    assert item_degrees.max() <= 750 and user_degrees.max() <= 100  # a quarter of the users / items


def test_degrees_sum_exactly_and_respect_cap_and_floor():
    degrees = long_tailed_degrees(count=1000, total=50_000, floor=3, cap=400, share=0.9)
    assert degrees.sum() == 50_000 and degrees.min() >= 3 and degrees.max() <= 400
    assert abs(head_share(degrees) - 0.9) < 0.001
    assert list(degrees) == sorted(degrees, reverse=True)


def test_paper_filters_keep_every_user_and_item(tmp_path):
    """ML-20M's settings (rating > 3.5, min_uc 5) and MSD's (no threshold, min_sc 200, min_uc 20) on
    shapes whose floors meet them: the split has every user and item, and every interaction."""
    for shape, preprocess in (
        (SHAPE, {"threshold": 3.5, "min_uc": 5, "min_sc": 0}),
        (
            {**SHAPE, "interactions": 100_000, "min_item_positives": 200, "min_user_positives": 20},
            {"threshold": None, "min_uc": 20, "min_sc": 200},
        ),
    ):
        _, path = fetch(tmp_path, shape, f"p{shape['interactions']}")
        frame = read_interactions("synthetic", [path])
        parameters = SplitParameters.from_config({**preprocess, "n_heldout": 300, "seed": 98765, "test_prop": 0.2})
        split = liang_split(frame, parameters, "toy")
        assert split.filtering[-1]["users"] == 3000 and split.filtering[-1]["interactions"] == shape["interactions"]
        assert len(split.item_ids) == 400
        assert sum(len(users) for users in split.users.values()) == 3000


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"synthetic": {"users": 10, "items": 5, "seed": 0}, "format": "synthetic"}, "missing keys ['interactions']"),
        (
            {"synthetic": {**SHAPE, "interactions": 1000}, "format": "synthetic"},
            "synthetic.interactions: 1000 is outside",
        ),
        ({"synthetic": {**SHAPE, "users": 2.5}, "format": "synthetic"}, "synthetic.users: 2.5 is not an integer"),
        ({"synthetic": SHAPE, "format": "msd-triplets"}, "a synthetic source has format: synthetic"),
        ({"path": "/data/x.tsv", "format": "synthetic"}, "a synthetic source has format: synthetic"),
        ({"synthetic": SHAPE, "format": "synthetic", "md5": "0" * 32}, "['md5'] do not go with a synthetic source"),
    ],
)
def test_bad_shapes_are_refused_naming_the_key(entry, message):
    with pytest.raises(DataError, match=f"datasets.toy.sources\\[0\\].*{__import__('re').escape(message)}"):
        Source.from_config(entry, "datasets.toy.sources[0]")
