"""semtail.recommend: a user's top items by raw id, against scores computed by hand on a tiny split."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from semtail.modelfile import model_file, save_model
from semtail.models.base import Fitted, TrainingData
from semtail.recommend import Recommendation, recommend

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ["i10", "i20", "i30", "i40", "i50"]
TRAIN_USERS = ["alice", "bob", "carol"]
TRAIN = [[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
VALIDATION_USERS = ["dave"]
TEST_USERS = ["erin", "frank x"]  # an id with a space
TEST_TR = [[0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]
TEST_TE = [[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]
# U (zero diagonal); row j: what item j adds to each item's score
U = [
    [0.0, 0.5, 0.2, -0.1, 0.3],
    [0.4, 0.0, 0.9, 0.1, 0.1],
    [0.3, 0.2, 0.0, 0.7, 0.2],
    [0.1, 0.1, 0.6, 0.0, 0.8],
    [0.2, 0.6, 0.2, 0.3, 0.0],
]


def write_split(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, ids in [
        ("items", ITEMS),
        ("train_users", TRAIN_USERS),
        ("validation_users", VALIDATION_USERS),
        ("test_users", TEST_USERS),
    ]:
        (folder / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    for name, rows in [
        ("train", TRAIN),
        ("validation_tr", [[0, 0, 0, 0, 1]]),
        ("validation_te", [[1, 0, 0, 0, 0]]),
        ("test_tr", TEST_TR),
        ("test_te", TEST_TE),
    ]:
        sp.save_npz(folder / f"{name}.npz", sp.csr_matrix(np.array(rows, dtype=np.float32)))
    return folder


def model(method: str, state: dict, n_train_users: int = 3) -> dict:
    train = sp.csr_matrix(np.zeros((n_train_users, len(ITEMS)), dtype=np.float32))
    data = TrainingData(train=train, validation_tr=train, validation_te=train)
    return model_file(
        dataset="toy",
        method=method,
        variant=method,
        seed=0,
        hyperparameters={},
        data=data,
        fitted=Fitted(state=state, history=[], best_epoch=None),
        code_version="test",
        environment={},
        train_seconds=0.0,
    )


@pytest.fixture
def split(tmp_path):
    return write_split(tmp_path / "processed" / "toy")


@pytest.fixture
def ease_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(path, model("ease", {"U": torch.tensor(U)}))
    return path


def test_a_training_user_gets_x_times_u_without_their_training_items(split, ease_file):
    # alice has i10 and i20: x·U = U[0] + U[1] = [0.4, 0.5, 1.1, 0.0, 0.4]; i10, i20 left out;
    # i30 1.1, then i50 0.4, then i40 0.0
    got = recommend(ease_file, split, "alice", k=10)
    assert [r.item for r in got] == ["i30", "i50", "i40"]
    assert [r.score for r in got] == pytest.approx([1.1, 0.4, 0.0])
    assert recommend(ease_file, split, "alice", k=2) == got[:2]


def test_a_test_user_is_scored_on_their_fold_in_row(split, ease_file):
    # "frank x" has fold-in i10 and i50 (their held-out i20 is not left out): U[0] + U[4] =
    # [0.2, 1.1, 0.4, 0.2, 0.3]; i20 1.1, i30 0.4, then i40 0.2 (i10 and i50 left out)
    got = recommend(ease_file, split, "frank x", k=3)
    assert got == [
        Recommendation("i20", pytest.approx(1.1)),
        Recommendation("i30", pytest.approx(0.4)),
        Recommendation("i40", pytest.approx(0.2)),
    ]
    # dave (validation) has fold-in i50: U[4] = [0.2, 0.6, 0.2, 0.3, 0]; ties of 0.2 to the lower column
    assert [r.item for r in recommend(ease_file, split, "dave", k=4)] == ["i20", "i40", "i10", "i30"]


def test_popularity_scores_and_ties_to_the_lower_column(split, tmp_path):
    path = tmp_path / "mostpop.pt"
    save_model(path, model("mostpop", {"popularity": torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0])}))
    # carol has i40 and i50: i20 (2), then i10 and i30 (1, ties to the lower column)
    assert recommend(path, split, "carol", k=5) == [
        Recommendation("i20", 2.0),
        Recommendation("i10", 1.0),
        Recommendation("i30", 1.0),
    ]


def test_an_unknown_user_and_another_split_are_named(split, ease_file, tmp_path):
    with pytest.raises(KeyError, match=r"user 'zoe' is not in .*train_users.txt, validation_users.txt, test_users.txt"):
        recommend(ease_file, split, "zoe")
    other = tmp_path / "other.pt"
    save_model(other, model("ease", {"U": torch.tensor(U)}, n_train_users=4))
    with pytest.raises(ValueError, match=r"train.npz: 3 training users, but .*other.pt was trained on 4"):
        recommend(other, split, "alice")
    (split / "items.txt").write_text("i10\ni20\n")
    with pytest.raises(ValueError, match=r"items.txt: 2 items, but .*model.pt was trained on 5"):
        recommend(ease_file, split, "alice")


def run_module(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts")}
    return subprocess.run(
        [sys.executable, "-m", "semtail.recommend", *map(str, args)], capture_output=True, text=True, env=env
    )


def test_the_command_prints_raw_ids_and_scores(split, ease_file):
    done = run_module(ease_file, "--split", split, "--user", "alice", "-k", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["rank\titem\tscore", "1\ti30\t1.1", "2\ti50\t0.4"]

    unknown = run_module(ease_file, "--split", split, "--user", "zoe")
    assert unknown.returncode == 1 and "user 'zoe' is not in" in unknown.stderr and not unknown.stdout
    no_split = run_module(ease_file, "--user", "alice")
    assert no_split.returncode == 2 and "name it with --split" in no_split.stderr
