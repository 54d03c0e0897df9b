"""Tiny synthetic datasets in every raw format, and a tiny wheel, for the data-layer tests.
Everything is generated; no real dataset content is used."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_ratings(
    seed: int = 0,
    n_users: int = 120,
    n_items: int = 60,
    mean_per_user: float = 20.0,
    ratings=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    string_ids: bool = False,
) -> pd.DataFrame:
    """Unique (user, item) pairs with a skewed item popularity and skewed user activity, in a random
    row order; ids are sparse (not 0..n-1) so that id order, code order and row order all differ."""
    rng = np.random.default_rng(seed)
    user_ids = rng.choice(np.arange(1, 50 * n_users), size=n_users, replace=False)
    item_ids = rng.choice(np.arange(1, 50 * n_items), size=n_items, replace=False)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    rows = []
    for user in user_ids:
        n = int(min(n_items, max(1, rng.geometric(1.0 / mean_per_user))))
        for item in rng.choice(item_ids, size=n, replace=False, p=popularity):
            rows.append((int(user), int(item), float(rng.choice(ratings))))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating"]).sample(frac=1.0, random_state=seed)
    frame = frame.reset_index(drop=True)
    if string_ids:
        frame["user"] = [f"u{hashlib.sha1(str(u).encode()).hexdigest()[:12]}" for u in frame["user"]]
        frame["item"] = [f"SO{hashlib.sha1(str(i).encode()).hexdigest()[:10].upper()}" for i in frame["item"]]
    frame["rating"] = frame["rating"].astype(np.float32)
    return frame


def write_ml20m(frame: pd.DataFrame, path: Path) -> Path:
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{i},{r:.1f},{1_000_000_000 + n}" for n, (u, i, r) in enumerate(frame.itertuples(index=False))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_udata(frame: pd.DataFrame, path: Path) -> Path:
    lines = [f"{u}\t{i}\t{int(r)}\t{880_000_000 + n}" for n, (u, i, r) in enumerate(frame.itertuples(index=False))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_recbole_inter(frame: pd.DataFrame, path: Path) -> Path:
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{int(r)}\t{880_000_000 + n}" for n, (u, i, r) in enumerate(frame.itertuples(index=False))]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_msd_triplets(frame: pd.DataFrame, path: Path) -> Path:
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\n" for u, i, r in frame.itertuples(index=False)))
    return path


def write_synthetic_tsv(frame: pd.DataFrame, path: Path) -> Path:
    """The layout the synthetic source generates (semtail/datasets/synthetic.py)."""
    path.write_text("user\titem\trating\n" + "".join(f"{u}\t{i}\t{r}\n" for u, i, r in frame.itertuples(index=False)))
    return path


# A source entry of the generic delimited format, as the README's "Your own dataset" shows one: its
# columns in another order than user, item, rating, an extra column, and `;` as the separator.
DELIMITED_SOURCE = {
    "format": "delimited",
    "sep": ";",
    "header": True,
    "columns": {"user": "customer", "item": "product", "rating": "stars"},
}


def write_delimited(frame: pd.DataFrame, path: Path) -> Path:
    """The DELIMITED_SOURCE layout: stars;product;channel;customer, ids as they are (strings here)."""
    lines = ["stars;product;channel;customer"]
    lines += [f"{r:g};{i};web;{u}" for u, i, r in frame.itertuples(index=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


def netflix_movie_texts(frame: pd.DataFrame) -> dict[int, str]:
    """Per movie, the text of its block: 'MovieID:' then 'CustomerID,Rating,Date' lines in row order."""
    texts = {}
    for movie, group in frame.groupby("item", sort=True):
        lines = [f"{movie}:"]
        lines += [
            f"{u},{int(r)},2005-{1 + u % 12:02d}-{1 + u % 28:02d}" for u, r in zip(group["user"], group["rating"])
        ]
        texts[int(movie)] = "\n".join(lines) + "\n"
    return texts


def write_netflix_combined(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """combined_data_1..4.txt, the movies in id order spread over the four files."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = list(netflix_movie_texts(frame).values())
    paths = []
    for index, chunk in enumerate(np.array_split(np.arange(len(texts)), 4)):
        path = folder / f"combined_data_{index + 1}.txt"
        path.write_text("".join(texts[i] for i in chunk))
        paths.append(path)
    return paths


def write_netflix_tar(frame: pd.DataFrame, path: Path, member_order: str = "sorted") -> Path:
    """nf_prize_dataset.tar.gz: download/training_set.tar holding training_set/mv_XXXXXXX.txt,
    plus the other files of the real archive. member_order 'reversed' stores the movies backwards."""
    texts = netflix_movie_texts(frame)
    movies = sorted(texts, reverse=member_order == "reversed")
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as training_set:
        add_bytes(training_set, "training_set", None)
        for movie in movies:
            add_bytes(training_set, f"training_set/mv_{movie:07d}.txt", texts[movie].encode())
    with tarfile.open(path, mode="w:gz") as archive:
        add_bytes(archive, "download", None)
        add_bytes(archive, "download/README", b"synthetic test archive\n")
        add_bytes(archive, "download/movie_titles.txt", b"1,2003,A Title\n")
        add_bytes(archive, "download/training_set.tar", inner.getvalue())
        add_bytes(archive, "download/probe.txt", b"1:\n30878\n")
    return path


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes | None, symlink_to: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if symlink_to is not None:
        info.type, info.linkname = tarfile.SYMTYPE, symlink_to
        archive.addfile(info)
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        archive.addfile(info, io.BytesIO(data))


def build_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid py3-none-any wheel holding `files`."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: semtail-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path, data in contents.items():
            bundle.writestr(path, data)
    return wheel


RAW_WRITERS = {
    "ml-20m": lambda frame, directory: [write_ml20m(frame, directory / "ratings.csv")],
    "ml-100k": lambda frame, directory: [write_udata(frame, directory / "u.data")],
    "recbole-inter": lambda frame, directory: [write_recbole_inter(frame, directory / "ml-100k.inter")],
    "msd-triplets": lambda frame, directory: [write_msd_triplets(frame, directory / "train_triplets.txt")],
    "netflix-combined": lambda frame, directory: write_netflix_combined(frame, directory / "netflix"),
    "netflix-tar": lambda frame, directory: [write_netflix_tar(frame, directory / "nf_prize_dataset.tar.gz")],
    "delimited": lambda frame, directory: [write_delimited(frame, directory / "shop.csv")],
    "synthetic": lambda frame, directory: [write_synthetic_tsv(frame, directory / "synthetic.tsv")],
}
# The source entry each format needs besides its files (only the delimited format reads one).
SOURCE_OPTIONS = {"delimited": DELIMITED_SOURCE}


def synthetic_for_format(raw_format: str, seed: int = 0, **kwargs) -> pd.DataFrame:
    """Synthetic ratings with the id and rating kinds of that format."""
    if raw_format == "msd-triplets":
        return synthetic_ratings(seed, ratings=(1, 1, 1, 2, 3, 5, 12), string_ids=True, **kwargs)
    if raw_format == "delimited":
        return synthetic_ratings(seed, string_ids=True, **kwargs)
    if raw_format in ("ml-100k", "recbole-inter") or raw_format.startswith("netflix"):
        return synthetic_ratings(seed, ratings=(1.0, 2.0, 3.0, 4.0, 5.0), **kwargs)
    return synthetic_ratings(seed, **kwargs)


TRAINING_SPLIT = ("train", "validation_tr", "validation_te")


def save_training_split(folder: Path, data) -> dict[str, str]:
    """A training job's split files (train, validation_tr, validation_te .npz) of `data` (a
    semtail.models.synthetic.training_data) in `folder`; their paths by input name."""
    import scipy.sparse as sp

    for name in TRAINING_SPLIT:
        sp.save_npz(Path(folder) / f"{name}.npz", getattr(data, name))
    return {name: str(Path(folder) / f"{name}.npz") for name in TRAINING_SPLIT}
