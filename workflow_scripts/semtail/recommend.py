"""Recommendations for one user, by raw id, from a model file and the split it was trained on:

    python -m semtail.recommend results/<d>/<m>/seed<s>/model.pt --split data/processed/<d>/<split key> --user <raw id> -k 10

prints the k best items (raw ids) with their scores, best first, ties to the lower item column as in
the evaluation, leaving out the items the user interacted with in the split's own files: a
training user's row of train.npz, a validation or test user's fold-in row (validation_tr.npz,
test_tr.npz); those rows are also what the method scores. The model file does not record the
split folder it was trained from, so `--split` names it; its items.txt and train.npz must have
the model's numbers of items and training users. `recommend` is the same as a function.
docs/model_file.md says how a model's rows and columns map to raw ids.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from semtail.metrics import rank_top_k
from semtail.modelfile import ModelFileError, load_model, scorer
from semtail.models.base import read_interactions

# The split's groups of users: the file of their raw ids, one a line in row order, and the matrix
# whose row holds a user's interactions that are scored and left out of the recommendations.
USER_ROWS = (
    ("train_users.txt", "train.npz"),
    ("validation_users.txt", "validation_tr.npz"),
    ("test_users.txt", "test_tr.npz"),
)


@dataclass(frozen=True)
class Recommendation:
    item: str  # the raw item id
    score: float  # the method's score (for rerank its ranking key, docs/model_file.md)


def read_ids(path: Path) -> list[str]:
    """Raw ids, one a line ("\\n"; nothing else ends a line, so an id may hold any other character)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def user_row(split: Path, user: str, n_items: int) -> tuple[torch.Tensor, str]:
    """The user's interactions as a dense 1 × items row, and the file its row comes from."""
    for ids_file, matrix_file in USER_ROWS:
        ids = read_ids(split / ids_file)
        if user not in ids:
            continue
        matrix = read_interactions(split / matrix_file, n_items=n_items)
        if matrix.shape[0] != len(ids):
            raise ValueError(
                f"{split / ids_file}: {len(ids)} user ids, but {split / matrix_file} has {matrix.shape[0]} rows"
            )
        row = matrix[ids.index(user)].toarray()
        return torch.from_numpy(row), matrix_file
    files = ", ".join(ids_file for ids_file, _ in USER_ROWS)
    raise KeyError(f"user {user!r} is not in {split}/ {files}: no such user in this split")


def recommend(
    model: dict | str | Path, split: str | Path, user: str, k: int = 10, device: torch.device | str = "cpu"
) -> list[Recommendation]:
    """The k best items for `user` (a raw id) under `model` (a model file or its loaded dict),
    best first, without the user's own items of the split folder `split`; fewer when fewer remain."""
    if k < 1:
        raise ValueError(f"k must be at least 1, is {k}")
    source = str(model) if not isinstance(model, dict) else "the model"
    if not isinstance(model, dict):
        model = load_model(model, mmap=True)
    split = Path(split)
    items = read_ids(split / "items.txt")
    if len(items) != model["n_items"]:
        raise ValueError(
            f"{split / 'items.txt'}: {len(items)} items, but {source} was trained on {model['n_items']}: "
            "not the split it was trained from"
        )
    n_train_users = read_interactions(split / "train.npz", n_items=len(items)).shape[0]
    if n_train_users != model["n_train_users"]:
        raise ValueError(
            f"{split / 'train.npz'}: {n_train_users} training users, but {source} was trained on "
            f"{model['n_train_users']}: not the split it was trained from"
        )
    row, _ = user_row(split, str(user), len(items))
    seen = row > 0
    with torch.no_grad():
        scores = scorer(model, device)(row.to(device)).cpu()
    available = int((~seen).sum())
    top = rank_top_k(scores, min(k, available), exclude=seen)[0].tolist()
    return [Recommendation(items[i], float(scores[0, i])) for i in top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m semtail.recommend", description=__doc__.splitlines()[0].rstrip(":") + "."
    )
    parser.add_argument("model", help="a model file: results/<dataset>/<method>/seed<seed>/model.pt")
    parser.add_argument("--user", required=True, help="the user's raw id, as in the split's *_users.txt")
    parser.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument(
        "--split", help="the split folder the model was trained from (data/processed/<dataset>/<split key>): required"
    )
    parser.add_argument("--device", default="cpu", help="where to score (default cpu)")
    args = parser.parse_args(argv)
    if args.split is None:
        parser.error(
            f"{args.model}: a model file does not record the split folder it was trained from; "
            "name it with --split (the train job's input folder, data/processed/<dataset>/<split key>)"
        )
    try:
        recommendations = recommend(args.model, args.split, args.user, args.k, args.device)
    except (ModelFileError, FileNotFoundError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    except KeyError as error:
        parser.exit(1, f"error: {error.args[0]}\n")
    print("rank\titem\tscore")
    for rank, recommendation in enumerate(recommendations, 1):
        print(f"{rank}\t{recommendation.item}\t{recommendation.score:.6g}")


if __name__ == "__main__":
    main(sys.argv[1:])
