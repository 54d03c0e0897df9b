"""Times the preprocess stage on synthetic data of a real dataset's size.

    .venv/bin/python benchmarks/preprocess_benchmark.py                  # ML-20M size: 20M ratings
    .venv/bin/python benchmarks/preprocess_benchmark.py --format netflix-combined --rows 100000000

Writes the raw file(s) into a temporary folder (never into the repository), registers them with the
download stage as a local `path:` source, then runs workflow_scripts/preprocess.py as Snakemake would
run it (a fresh process) and reports its wall time, the time of each phase (from its log) and its
peak memory. The synthetic ratings mimic the real shape: heavy-tailed user activity with at least 20
ratings per user, Zipf-like item popularity, rows ordered by user then item (ML-20M) or by movie
(Netflix), so filtering, the split and the held-out draws do the same amount of work as on real data.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from semtail.datasets.sources import fetch_dataset  # noqa: E402

SHAPES = {  # users, items, half-star ratings or not, n_heldout: as in the paper's configs
    "ml-20m": dict(users=138_493, items=26_744, half_stars=True, n_heldout=10_000),
    "netflix-combined": dict(users=480_189, items=17_770, half_stars=False, n_heldout=40_000),
}


def synthetic_ratings(rows: int, users: int, items: int, half_stars: bool, seed: int):
    """(user, item, rating) with unique pairs, sorted by user then item; about `rows` of them."""
    rng = np.random.default_rng(seed)
    activity = np.maximum(20, rng.lognormal(mean=0.0, sigma=1.2, size=users))
    per_user = np.maximum(20, np.round(activity / activity.sum() * rows * 1.25)).astype(np.int64)
    user = np.repeat(np.arange(1, users + 1, dtype=np.int64), per_user)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    item_ids = rng.permutation(np.arange(1, 5 * items, dtype=np.int64))[:items]
    item = item_ids[np.searchsorted(np.cumsum(popularity / popularity.sum()), rng.random(len(user)))]
    key = np.unique(user * (10 * items) + item)  # unique pairs, sorted by user then item
    if len(key) > rows:
        key = key[np.sort(rng.choice(len(key), size=rows, replace=False))]
    user, item = key // (10 * items), key % (10 * items)
    if half_stars:
        values, weights = np.arange(1, 11) / 2, [1, 3, 2, 7, 4, 20, 12, 27, 8, 16]
    else:
        values, weights = np.arange(1, 6, dtype=float), [5, 10, 29, 34, 22]
    rating = rng.choice(values, size=len(user), p=np.array(weights) / np.sum(weights))
    return user, item, rating


def write_ml20m(folder: Path, user, item, rating) -> Path:
    path = folder / "ratings.csv"
    table = pa.table(
        {
            "userId": pa.array(user, pa.int32()),
            "movieId": pa.array(item, pa.int32()),
            "rating": pa.array(rating, pa.float32()),
            "timestamp": pa.array(1_100_000_000 + np.arange(len(user)) % 300_000_000, pa.int64()),
        }
    )
    with open(path, "wb") as handle:
        handle.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False))
    return path


def write_netflix_combined(folder: Path, user, item, rating) -> Path:
    """combined_data_1..4.txt: blocks of 'MovieID:' then 'CustomerID,Rating,Date' lines."""
    order = np.argsort(item, kind="stable")
    user, item, rating = user[order], item[order], rating[order].astype(np.int8)
    movies, starts = np.unique(item, return_index=True)
    bounds = np.r_[starts, len(item)]
    netflix = folder / "netflix"
    netflix.mkdir()
    date = pa.array(np.full(len(user), "2005-09-06"), pa.string())
    table = pa.table({"user": pa.array(user, pa.int32()), "rating": pa.array(rating, pa.int8()), "date": date})
    for part, movie_range in enumerate(np.array_split(np.arange(len(movies)), 4)):
        with open(netflix / f"combined_data_{part + 1}.txt", "wb") as handle:
            for m in movie_range.tolist():
                handle.write(f"{movies[m]}:\n".encode())
                rows = table.slice(bounds[m], bounds[m + 1] - bounds[m])
                pacsv.write_csv(rows, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return netflix


def run_measuring_memory(command: list[str]) -> float:
    """Runs command; returns its peak resident memory in MiB, sampled every 50 ms. (Its ru_maxrss
    would not do: a child's high-water mark starts at the parent's, here the generator's, at fork.)"""
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    peak_kib = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        peak_kib = max(peak_kib, int(match.group(1)) if match else 0)
        time.sleep(0.05)
    if process.wait() != 0:
        raise SystemExit(f"the preprocess script failed (exit {process.returncode}): {shlex.join(command)}")
    return peak_kib / 1024


def phase_times(log_text: str) -> list[tuple[float, str]]:
    """Seconds since the first log line, per log line."""
    stamps = []
    for line in log_text.splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)", line)
        if match:
            stamps.append((datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"), match.group(2)))
    return [((t - stamps[0][0]).total_seconds(), message) for t, message in stamps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(SHAPES), default="ml-20m")
    parser.add_argument("--rows", type=int, default=20_000_000, help="about this many ratings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the synthetic data here and reuse it on later runs (default: a temporary folder)",
    )
    args = parser.parse_args()
    shape = SHAPES[args.format]

    if args.workdir is not None and args.workdir.resolve().is_relative_to(ROOT):
        parser.error(f"--workdir {args.workdir} is inside the repository; choose a folder outside it")
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="semtail-preprocess-benchmark-"))
    folder = folder / f"{args.format}-{args.rows}-{args.seed}" if args.workdir else folder
    raw = folder / ("ratings.csv" if args.format == "ml-20m" else "netflix")
    if not raw.exists():
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        user, item, rating = synthetic_ratings(
            args.rows, shape["users"], shape["items"], shape["half_stars"], args.seed
        )
        writer = write_ml20m if args.format == "ml-20m" else write_netflix_combined
        raw = writer(folder, user, item, rating)
        print(
            f"wrote {len(user):,} synthetic ratings ({args.format}) to {raw} in {time.perf_counter() - started:.1f} s"
        )
        del user, item, rating

    provenance = folder / "raw" / "provenance.json"
    started = time.perf_counter()
    fetch_dataset("benchmark", [{"path": str(raw), "format": args.format}], provenance)
    print(f"download stage (checksums of the local file): {time.perf_counter() - started:.1f} s")

    params = folder / "params.yaml"
    settings = dict(threshold=3.5, min_uc=5, min_sc=0, n_heldout=shape["n_heldout"], seed=98765, test_prop=0.2)
    params.write_text(json.dumps({"dataset": "benchmark", "preprocess": settings}))
    processed = folder / "processed"
    names = {"item_ids": "items.txt", "stats": "stats.json"}
    outputs = []
    for name in ("train", "validation_tr", "validation_te", "test_tr", "test_te"):
        outputs += ["--output", f"{name}={processed / (name + '.npz')}"]
    for name in ("item_ids", "train_users", "validation_users", "test_users", "stats"):
        outputs += ["--output", f"{name}={processed / names.get(name, name + '.txt')}"]
    log = folder / "preprocess.log"
    command = [sys.executable, str(ROOT / "workflow_scripts/preprocess.py"), "--input", f"provenance={provenance}"]
    command += outputs + ["--params", str(params), "--log", str(log)]
    started = time.perf_counter()
    peak_mib = run_measuring_memory(command)
    seconds = time.perf_counter() - started

    stats = json.loads((processed / "stats.json").read_text())
    print(f"preprocess script: {seconds:.1f} s wall, peak memory {peak_mib:,.0f} MiB")
    for offset, message in phase_times(log.read_text()):
        print(f"  {offset:6.1f} s  {message[:110]}")
    print(f"result: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions")
    if args.workdir is None:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
