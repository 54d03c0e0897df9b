"""workflow_scripts/preprocess.py run standalone (through script_run's command line) on synthetic
raw files: the output files, their agreement with each other and with counts computed here from the
raw data, the loud warning on a size mismatch, and that a failure writes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from semtail.datasets.formats import Anomalies
from semtail.datasets.preprocess import OUTPUT_NAMES, count_outside_scale, expected_mismatches, preprocess
from semtail.datasets.sources import fetch_dataset
from synthetic_data import synthetic_for_format, write_ml20m

ROOT = Path(__file__).resolve().parents[1]
FILE_NAMES = {"item_ids": "items.txt", "stats": "stats.json"}
MATRICES = ("train", "validation_tr", "validation_te", "test_tr", "test_te")
SETTINGS = {
    "ml-20m": dict(threshold=3.5, min_uc=5, min_sc=0, n_heldout=12, seed=98765, test_prop=0.2),
    "netflix-tar": dict(threshold=3.5, min_uc=5, min_sc=0, n_heldout=12, seed=98765, test_prop=0.2),
    "msd-triplets": dict(threshold=None, min_uc=6, min_sc=8, n_heldout=10, seed=98765, test_prop=0.2),
}


def output_paths(folder: Path) -> dict[str, Path]:
    return {
        name: folder / FILE_NAMES.get(name, f"{name}.npz" if name in MATRICES else f"{name}.txt")
        for name in OUTPUT_NAMES
    }


def run_preprocess(tmp_path: Path, provenance: Path, params: dict, outputs: dict[str, Path]):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    command = [sys.executable, str(ROOT / "workflow_scripts/preprocess.py"), "--input", f"provenance={provenance}"]
    command += [arg for name, path in outputs.items() for arg in ("--output", f"{name}={path}")]
    command += ["--params", str(params_file), "--log", str(tmp_path / "preprocess.log")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def downloaded(raw_format: str, frame: pd.DataFrame, raw_files, tmp_path: Path) -> Path:
    [path] = raw_files(raw_format, frame)
    provenance = tmp_path / "data/raw/synthetic/provenance.json"
    fetch_dataset("synthetic", [{"path": str(path), "format": raw_format}], provenance)
    return provenance


def read_ids(path: Path, kind) -> list:
    return [kind(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("raw_format", list(SETTINGS))
def test_standalone_run_writes_a_consistent_split(raw_format, raw_files, tmp_path):
    frame = synthetic_for_format(raw_format, seed=21, n_users=150)
    provenance = downloaded(raw_format, frame, raw_files, tmp_path)
    outputs = output_paths(tmp_path / "data/processed/synthetic")
    settings = SETTINGS[raw_format]

    # Counts computed here from the raw frame with pandas.
    kept = frame if settings["threshold"] is None else frame[frame["rating"] > settings["threshold"]]
    if settings["min_sc"]:
        per_item = kept.groupby("item").size()
        kept = kept[kept["item"].isin(per_item.index[per_item >= settings["min_sc"]])]
    per_user = kept.groupby("user").size()
    kept = kept[kept["user"].isin(per_user.index[per_user >= settings["min_uc"]])]

    params = {"dataset": "synthetic", "preprocess": settings, "code_version": "abc"}
    if raw_format == "ml-20m":  # published sizes that the synthetic data cannot match
        params["expected"] = {"users": 136677, "items": 20108}
        params["expected"].update(interactions=10_000_000, interactions_relative_tolerance=0.005)
    elif raw_format == "netflix-tar":  # 0.4% off, within the tolerance of 0.5%
        params["expected"] = {"interactions": round(len(kept) * 1.004), "interactions_relative_tolerance": 0.005}
    else:  # the count after filtering, exactly
        params["expected"] = {"users": kept["user"].nunique(), "interactions": len(kept)}
    result = run_preprocess(tmp_path, provenance, params, outputs)
    assert result.returncode == 0, result.stderr

    kind = str if raw_format == "msd-triplets" else int
    users = {part: read_ids(outputs[f"{part}_users"], kind) for part in ("train", "validation", "test")}
    items = read_ids(outputs["item_ids"], kind)
    assert sorted(sum(users.values(), [])) == sorted(kept["user"].unique().tolist())
    assert len(users["validation"]) == len(users["test"]) == settings["n_heldout"]
    assert sorted(items) == sorted(kept.loc[kept["user"].isin(users["train"]), "item"].unique().tolist())

    matrices = {name: sp.load_npz(outputs[name]) for name in MATRICES}
    for name, matrix in matrices.items():
        part = name.split("_")[0]
        assert matrix.format == "csr" and matrix.shape == (len(users[part]), len(items))
        assert set(np.unique(matrix.data)) <= {1.0}
    column = {item: j for j, item in enumerate(items)}
    for row in (0, len(users["train"]) - 1):
        user_items = kept.loc[kept["user"] == users["train"][row], "item"]
        assert sorted(matrices["train"][row].indices) == sorted(column[i] for i in user_items)
    for part in ("validation", "test"):
        in_train = kept[kept["user"].isin(users[part]) & kept["item"].isin(items)]
        assert matrices[f"{part}_tr"].nnz + matrices[f"{part}_te"].nnz == len(in_train)

    stats = json.loads(outputs["stats"].read_text())
    total = sum(m.nnz for m in matrices.values())
    assert {k: stats[k] for k in ("users", "items", "interactions")} == {
        "users": kept["user"].nunique(),
        "items": len(items),
        "interactions": total,
    }
    assert all(type(stats[k]) is int for k in ("users", "items", "interactions"))
    assert stats["matrices"]["test_te"]["interactions"] == matrices["test_te"].nnz
    assert stats["density"] == pytest.approx(total / (stats["users"] * stats["items"]))
    assert stats["filtering"][-1]["interactions"] == stats["interactions_after_filtering"] == len(kept)
    assert stats["code_version"] == "abc"
    assert stats["raw"]["format"] == raw_format and stats["preprocess"] == settings
    assert not [p for p in outputs["stats"].parent.iterdir() if "partial" in p.name]

    assert stats["expected"] == params["expected"]
    if raw_format == "ml-20m":
        mismatches = [
            f"users: {stats['users']:,}, published 136,677, exact",
            f"items: {stats['items']:,}, published 20,108, exact",
            f"interactions after filtering: {len(kept):,}, published 10,000,000, relative tolerance 0.005 (±50,000)",
        ]
        assert stats["expected_mismatches"] == mismatches
        assert stats["expected_compared_with"]["interactions"] == "interactions_after_filtering"
        assert "synthetic: THE SPLIT DOES NOT MATCH THE PUBLISHED SIZES" in result.stderr
        assert all(m in result.stderr for m in mismatches)
        assert "DOES NOT MATCH" in (tmp_path / "preprocess.log").read_text()
    else:
        assert stats["expected_mismatches"] == [] and "DOES NOT MATCH" not in result.stderr


def test_empty_result_writes_nothing(raw_files, tmp_path):
    settings = {**SETTINGS["ml-20m"], "threshold": 5.0}
    problem = "synthetic: no interactions left after the filter rating > 5.0"
    frame = synthetic_for_format("ml-20m", seed=23, n_users=150)
    provenance = downloaded("ml-20m", frame, raw_files, tmp_path)
    outputs = output_paths(tmp_path / "out")
    outputs["stats"].parent.mkdir()
    outputs["stats"].write_text('{"users": 1, "items": 1, "interactions": 1}\n')  # from an earlier run
    result = run_preprocess(tmp_path, provenance, {"dataset": "synthetic", "preprocess": settings}, outputs)
    assert result.returncode == 1
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert list(outputs["stats"].parent.iterdir()) == []


def test_raw_file_changed_since_download_is_named(raw_files, tmp_path):
    frame = synthetic_for_format("ml-20m", seed=24, n_users=150)
    provenance = downloaded("ml-20m", frame, raw_files, tmp_path)
    raw = Path(yaml.safe_load(provenance.read_text())["files"][0])
    with raw.open("a") as handle:
        handle.write("1,2,3.0,4\n")
    outputs = output_paths(tmp_path / "out")
    result = run_preprocess(tmp_path, provenance, {"dataset": "synthetic", "preprocess": SETTINGS["ml-20m"]}, outputs)
    assert result.returncode == 1
    assert f"{raw}: " in result.stderr and "it changed since, rerun the download stage" in result.stderr
    assert not outputs["stats"].parent.exists()


def test_published_interactions_are_compared_before_the_split_drops_any(tmp_path):
    # 30 users rate items 1-6 and one item of their own; the 2·3 validation and test users' own items
    # are not in training, so the split drops 6 of the 7·30 interactions left after filtering.
    frame = pd.DataFrame(
        [(user, item, 4.0) for user in range(1, 31) for item in range(1, 7)]
        + [(user, 100 + user, 5.0) for user in range(1, 31)],
        columns=["user", "item", "rating"],
    )
    path = write_ml20m(frame, tmp_path / "ratings.csv")
    provenance = tmp_path / "raw/provenance.json"
    fetch_dataset("synthetic", [{"path": str(path), "format": "ml-20m"}], provenance)
    settings = {**SETTINGS["ml-20m"], "n_heldout": 3}

    def run(expected):
        return preprocess(provenance, output_paths(tmp_path / "out"), "synthetic", settings, expected)

    stats = run({"users": 30, "items": 6 + 24, "interactions": 210})
    assert (stats["interactions_after_filtering"], stats["interactions"]) == (210, 204)
    assert stats["expected_mismatches"] == []
    stats = run({"interactions": 204})
    assert stats["expected_mismatches"] == ["interactions after filtering: 210, published 204, exact"]


@pytest.mark.parametrize(
    "published, tolerance, mismatch",
    [
        (1000, None, None),
        (1001, None, "interactions after filtering: 1,000, published 1,001, exact"),
        (999, 0, "interactions after filtering: 1,000, published 999, exact"),
        (1005, 0.005, None),  # 5 off, 5.025 allowed
        (996, 0.005, None),  # 4 off, 4.98 allowed
        (995, 0.005, "interactions after filtering: 1,000, published 995, relative tolerance 0.005 (±5)"),
        (1006, 0.005, "interactions after filtering: 1,000, published 1,006, relative tolerance 0.005 (±5)"),
        (900, None, "interactions after filtering: 1,000, published 900, exact"),  # not the split's 900
    ],
)
def test_interactions_match_exactly_or_within_the_tolerance(published, tolerance, mismatch):
    stats = {"users": 10, "items": 20, "interactions": 900, "interactions_after_filtering": 1000}
    expected = {"users": 10, "items": 20, "interactions": published}
    if tolerance is not None:
        expected["interactions_relative_tolerance"] = tolerance
    assert expected_mismatches(stats, expected) == ([mismatch] if mismatch else [])


def test_published_sizes_of_the_paper_config():
    """The tolerances in configs/paper.yaml accept the counts that Liang et al.'s notebook prints for
    ML-20M (9,990,682 after filtering) and reject a count 1% off; MSD's must be exact."""
    datasets = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())["datasets"]
    ml20m, netflix, msd = (datasets[name]["expected"] for name in ("ml-20m", "netflix", "msd"))
    sizes = {"users": 136677, "items": 20108}
    assert expected_mismatches({**sizes, "interactions_after_filtering": 9_990_682}, ml20m) == []
    assert len(expected_mismatches({**sizes, "interactions_after_filtering": 10_100_000}, ml20m)) == 1
    netflix_sizes = {"users": 463435, "items": 17769}
    assert expected_mismatches({**netflix_sizes, "interactions_after_filtering": 56_860_000}, netflix) == []
    assert len(expected_mismatches({**netflix_sizes, "interactions_after_filtering": 56_800_000}, netflix)) == 1
    msd_sizes = {"users": 571355, "items": 41140}
    assert expected_mismatches({**msd_sizes, "interactions_after_filtering": 33_633_450}, msd) == []
    assert len(expected_mismatches({**msd_sizes, "interactions_after_filtering": 33_633_451}, msd)) == 1


def test_a_float_where_an_integer_belongs_is_named(raw_files, tmp_path):
    frame = synthetic_for_format("ml-20m", seed=25, n_users=150)
    provenance = downloaded("ml-20m", frame, raw_files, tmp_path)
    settings = {**SETTINGS["ml-20m"], "n_heldout": 12.0}
    outputs = output_paths(tmp_path / "out")
    result = run_preprocess(tmp_path, provenance, {"dataset": "synthetic", "preprocess": settings}, outputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "datasets.synthetic.preprocess.n_heldout: must be an integer, got 12.0" in result.stderr
    assert not outputs["stats"].parent.exists()


def test_odd_ratings_and_blank_lines_are_warned_about_and_recorded(raw_files, tmp_path):
    """Ratings outside ML-20M's 0.5-5 are kept and counted, non-finite ones dropped, blank lines
    skipped: each said in the log and written into stats.json's data_warnings."""
    frame = synthetic_for_format("ml-20m", seed=26, n_users=150)
    frame.loc[[3, 40], "rating"] = [0.0, 7.5]
    [path] = raw_files("ml-20m", frame)
    lines = path.read_text().splitlines(keepends=True)
    lines[11] = lines[11].replace(lines[11].split(",")[2], "nan")  # line 12
    lines[30:30] = ["\n"]  # line 31
    path.write_text("".join(lines))
    provenance = tmp_path / "data/raw/synthetic/provenance.json"
    fetch_dataset("synthetic", [{"path": str(path), "format": "ml-20m"}], provenance)
    outputs = output_paths(tmp_path / "out")
    result = run_preprocess(tmp_path, provenance, {"dataset": "synthetic", "preprocess": SETTINGS["ml-20m"]}, outputs)
    assert result.returncode == 0, result.stderr

    warnings = json.loads(outputs["stats"].read_text())["data_warnings"]
    assert warnings["ratings_outside_scale"] == {
        "count": 2,
        "first": None,
        "action": "kept (the threshold still applies)",
        "scale": [0.5, 5.0],
        "lowest": 0.0,
        "highest": 7.5,
    }
    assert warnings["blank_lines"] == {"count": 1, "first": f"{path}, line 31", "action": "skipped"}
    assert warnings["non_finite_ratings"] == {"count": 1, "first": f"{path}, line 12", "action": "dropped"}
    log = (tmp_path / "preprocess.log").read_text()
    for line in (
        "synthetic: 2 ratings outside the ml-20m scale (0.5 to 5; seen 0 to 7.5), kept (the threshold still "
        "applies); see stats.json, data_warnings",
        f"synthetic: 1 blank line(s), skipped (first: {path}, line 31)",
        f"synthetic: 1 non-finite rating(s) (NaN or infinite), dropped (first: {path}, line 12);",
    ):
        assert line in log, (line, log)


def test_a_path_source_changed_in_place_is_refused(raw_files, tmp_path):
    """The same size but other content: the sha256 recorded when it was first read tells."""
    frame = synthetic_for_format("ml-20m", seed=27, n_users=150)
    provenance = downloaded("ml-20m", frame, raw_files, tmp_path)
    recorded = json.loads(provenance.read_text())
    raw = Path(recorded["files"][0])
    assert (
        recorded["verified"] == []
        and recorded["file_checksums"][str(raw)]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    )
    text = raw.read_text()
    assert ",4.0," in text
    raw.write_text(text.replace(",4.0,", ",5.0,", 1))
    assert raw.stat().st_size == recorded["file_checksums"][str(raw)]["bytes"]
    outputs = output_paths(tmp_path / "out")
    result = run_preprocess(tmp_path, provenance, {"dataset": "synthetic", "preprocess": SETTINGS["ml-20m"]}, outputs)
    assert result.returncode == 1
    assert f"{raw}: its sha256 is {hashlib.sha256(raw.read_bytes()).hexdigest()} now" in result.stderr
    assert (
        f"it changed since, rerun the download stage to use it as it is now (snakemake --forcerun {provenance})"
        in result.stderr
    )


def test_a_threshold_on_data_without_ratings_is_refused(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("".join(f"u{u},i{(u * 7 + k) % 40}\n" for u in range(60) for k in range(8)))
    provenance = tmp_path / "raw/provenance.json"
    fetch_dataset(
        "clicks",
        [{"path": str(path), "format": "delimited", "sep": ",", "header": False, "columns": {"user": 0, "item": 1}}],
        provenance,
    )
    outputs = output_paths(tmp_path / "out")
    settings = {**SETTINGS["ml-20m"], "n_heldout": 5}
    result = run_preprocess(tmp_path, provenance, {"dataset": "clicks", "preprocess": settings}, outputs)
    assert result.returncode == 1
    assert (
        "datasets.clicks.preprocess.threshold is 3.5, but the data has no ratings (every row is a positive): set it to null or leave it out"
        in result.stderr
    )
    del settings["threshold"]
    result = run_preprocess(tmp_path, provenance, {"dataset": "clicks", "preprocess": settings}, outputs)
    assert result.returncode == 0, result.stderr
    stats = json.loads(outputs["stats"].read_text())
    assert stats["interactions_after_filtering"] == 60 * 8 and stats["users"] == 60


def test_a_delimited_provenance_without_its_source_entry_is_named(tmp_path):
    """The delimited format reads its layout from the source entry that provenance.json recorded."""
    path = tmp_path / "clicks.csv"
    path.write_text("".join(f"u{u},i{(u * 7 + k) % 40}\n" for u in range(60) for k in range(8)))
    provenance = tmp_path / "raw/provenance.json"
    fetch_dataset(
        "clicks",
        [{"path": str(path), "format": "delimited", "sep": ",", "header": False, "columns": {"user": 0, "item": 1}}],
        provenance,
    )
    recorded = json.loads(provenance.read_text())
    del recorded["source"]
    provenance.write_text(json.dumps(recorded))
    outputs = output_paths(tmp_path / "out")
    settings = {**SETTINGS["ml-20m"], "threshold": None, "n_heldout": 5}
    result = run_preprocess(tmp_path, provenance, {"dataset": "clicks", "preprocess": settings}, outputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        f"{provenance}: the delimited format needs the source entry recorded; rerun the download stage" in result.stderr
    )


@pytest.mark.parametrize(
    "raw_format, outside",
    [("ml-100k", [0.5, 0.0]), ("ml-20m", [0.0]), ("recbole-inter", [0.0]), ("msd-triplets", [0.5, 0.0])],
)
def test_ratings_outside_each_formats_scale_are_counted(raw_format, outside):
    """ML-100K rates 1 to 5 stars, ML-20M (and RecBole's .inter files) from half a star, and MSD's
    play counts are at least 1, with no upper end."""
    ratings = [0.5, 1.0, 3.0, 4.5, 5.0, 0.0] + ([250.0] if raw_format == "msd-triplets" else [])
    anomalies = Anomalies()
    count_outside_scale(pd.DataFrame({"rating": np.array(ratings, dtype=np.float32)}), raw_format, anomalies)
    found = anomalies.as_dict()["ratings_outside_scale"]
    assert (found["count"], found["lowest"], found["highest"]) == (len(outside), min(outside), max(outside))


def test_own_data_with_repeated_pairs_and_no_final_newline(tmp_path):
    """A delimited file with CRLF endings and no final newline is read whole; its repeated (user,
    item) lines are merged before the split, so no pair sits on both sides of a held-out user, and
    counted in the log and stats.json; with min_sc 0, validation and test interactions on items no
    training user has are dropped, and the log says how many."""
    rng = np.random.default_rng(3)
    lines, repeated = [], 0
    for user in range(80):
        items = rng.choice(60, size=12, replace=False).tolist() + [100 + user]  # one item of its own
        for item in items:
            lines.append(f"u{user}\ti{item}\t5")
        for item in items[:3]:
            lines.append(f"u{user}\ti{item}\t4")  # the same pair again
            repeated += 1
    path = tmp_path / "user_items.dat"
    path.write_bytes(("user\titem\tweight\r\n" + "\r\n".join(lines)).encode())
    provenance = tmp_path / "raw/provenance.json"
    source = {
        "path": str(path),
        "format": "delimited",
        "sep": "\t",
        "columns": {"user": "user", "item": "item", "rating": "weight"},
    }
    fetch_dataset("own", [source], provenance)
    outputs = output_paths(tmp_path / "out")
    settings = {"threshold": 3.5, "min_uc": 5, "min_sc": 0, "n_heldout": 10, "seed": 98765, "test_prop": 0.2}
    result = run_preprocess(tmp_path, provenance, {"dataset": "own", "preprocess": settings}, outputs)
    assert result.returncode == 0, result.stderr

    stats = json.loads(outputs["stats"].read_text())
    assert stats["data_warnings"] == {
        "repeated_pairs": {
            "count": repeated,
            "first": f"user 'u0', item 'i{lines[0].split(chr(9))[1][1:]}'",
            "action": "merged before the split: a pair counts once, as a positive when any of its lines is one "
            "(the highest rating decides), at its first such line",
        }
    }
    assert stats["interactions_after_filtering"] == 80 * 13
    for part in ("validation", "test"):
        fold_in, held_out = (sp.load_npz(outputs[f"{part}_{side}"]) for side in ("tr", "te"))
        assert fold_in.multiply(held_out).nnz == 0 and held_out.nnz > 0
    # Each held-out user's own item is in no training user's interactions: dropped, and said so.
    items = set(outputs["item_ids"].read_text().splitlines())
    dropped = {}
    for part in ("validation", "test"):
        users = set(outputs[f"{part}_users"].read_text().splitlines())
        pairs = {tuple(line.split("\t")[:2]) for line in lines if line.split("\t")[0] in users}
        dropped[part] = sum(item not in items for _, item in pairs)
    assert (
        dropped == {"validation": 10, "test": 10} == stats["dropped_validation_test_interactions_on_items_not_in_train"]
    )
    log = (tmp_path / "preprocess.log").read_text()
    assert f"own: {repeated} line(s) repeating an earlier line's (user, item) pair, merged before the split" in log
    assert (
        "own: 10 validation and 10 test interactions dropped: their items are in no training user's interactions" in log
    )
