"""The tables and figures refuse a run whose metrics.json was not redone with the current settings
(semtail.run_metrics.check_runs_current): after a retrain that failed or was killed, a table must
not mix old results with new ones."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semtail import run_metrics
from workflow_runs import AGGREGATE_OUTPUTS, output_args

ROOT = Path(__file__).resolve().parents[1]
IPW = {"lr": 0.001, "wd": 0.1, "alpha": 0.05}
EASE = {"lr": 0.001, "wd": 0.1}


def write_split(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("train", "test_tr", "test_te"):
        files[name] = folder / f"{name}.npz"
        files[name].write_bytes(f"the {name} matrix".encode())
    return files


def checksums(files: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def write_record(folder: Path, variant: str, seed: int, hyperparameters: dict, code_version: str, split: dict) -> Path:
    path = folder / f"results/tiny/{variant}/seed{seed}/metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": "tiny",
        "method": variant,
        "variant": variant,
        "seed": seed,
        "hyperparameters": hyperparameters,
        "metrics": {"ndcg@100": 0.4},
        "model": {"code_version": code_version},
        "split": split,
    }
    path.write_text(json.dumps(record))
    return path


CURRENT = {
    "ipw": {"hyperparameters": {**IPW, "lr": 1.0e6}, "code_version": "ipw-new"},
    "ease": {"hyperparameters": EASE, "code_version": "ease-1"},
}


def test_runs_of_the_current_settings_pass(tmp_path):
    split = write_split(tmp_path / "data")
    paths = [
        write_record(tmp_path, "ipw", 0, {**IPW, "lr": 1.0e6}, "ipw-new", checksums(split)),
        write_record(tmp_path, "ease", 0, EASE, "ease-1", checksums(split)),
    ]
    run_metrics.check_runs_current(paths, CURRENT, split)
    run_metrics.check_runs_current(paths, None, split)  # a script run by hand, without the rule's `runs`


def test_a_stale_run_is_refused_naming_the_run_the_key_and_both_values(tmp_path):
    split = write_split(tmp_path / "data")
    before = checksums(split)
    paths = [
        write_record(tmp_path, "ipw", 0, {**IPW, "lr": 1.0e6}, "ipw-new", before),
        write_record(tmp_path, "ipw", 1, IPW, "ipw-old", before),  # its retrain failed
        write_record(tmp_path, "ease", 0, EASE, "ease-1", before),
    ]
    split["test_te"].write_bytes(b"the test_te matrix, split again")  # ease's evaluation is of the old split
    after = checksums(split)
    with pytest.raises(ValueError) as refused:
        run_metrics.check_runs_current(paths, CURRENT, split)
    assert str(refused.value).splitlines() == [
        "these results were not redone with the current settings (a retrain that failed or was killed, then a run "
        "that did not redo it), so no table or figure is made of them:",
        f"  tiny/ipw seed 0 ({paths[0]}): split.test_te is {before['test_te']!r} there, {after['test_te']!r} now",
        f"  tiny/ipw seed 1 ({paths[1]}): hyperparameters.lr is 0.001 there, 1000000.0 now",
        f"  tiny/ipw seed 1 ({paths[1]}): model.code_version is 'ipw-old' there, 'ipw-new' now",
        f"  tiny/ipw seed 1 ({paths[1]}): split.test_te is {before['test_te']!r} there, {after['test_te']!r} now",
        f"  tiny/ease seed 0 ({paths[2]}): split.test_te is {before['test_te']!r} there, {after['test_te']!r} now",
        "redo them: snakemake --cores all --forcerun " + " ".join(str(path.with_name("model.pt")) for path in paths),
    ]


def test_a_record_without_split_checksums_or_of_an_unknown_run_is_refused(tmp_path):
    """A metrics.json of format_version 2 recorded no split; a run whose name left `methods:`."""
    split = write_split(tmp_path / "data")
    old = write_record(tmp_path, "ease", 0, EASE, "ease-1", None)
    with pytest.raises(ValueError, match=r"tiny/ease seed 0 \(.*\): split\.train is None there, '[0-9a-f]{64}' now"):
        run_metrics.check_runs_current([old], CURRENT, split)
    gone = write_record(tmp_path, "cvar", 0, EASE, "cvar-1", checksums(split))
    with pytest.raises(ValueError, match=r"seed0/metrics\.json: a run of 'cvar', which is not in the config's methods"):
        run_metrics.check_runs_current([gone], CURRENT, split)


def test_the_aggregate_script_refuses_a_stale_run_and_writes_nothing(tmp_path):
    split = write_split(tmp_path / "data")
    paths = [write_record(tmp_path, "ipw", s, IPW, "ipw-new", checksums(split)) for s in (0, 1)]
    for path in paths:
        path.with_name("per_user.csv").write_text("user,n_heldout,ndcg@100\n7,3,0.4\n")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "dataset": "tiny",
                "runs": {"ipw": CURRENT["ipw"]},
                "compare": {"reference": "ipw", "alpha": 0.05, "bootstrap_samples": 10, "bootstrap_seed": 0},
            }
        )
    )
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(ROOT / "workflow_scripts/aggregate.py"),
        "--params",
        str(params),
        "--input",
        "metrics=" + ",".join(map(str, paths)),
        "--input",
        "per_user=" + ",".join(str(path.with_name("per_user.csv")) for path in paths),
        *[arg for name, path in split.items() for arg in ("--input", f"{name}={path}")],
        *output_args(AGGREGATE_OUTPUTS, out),
        "--log",
        str(tmp_path / "aggregate.log"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    log = (tmp_path / "aggregate.log").read_text()
    assert f"tiny/ipw seed 0 ({paths[0]}): hyperparameters.lr is 0.001 there, 1000000.0 now" in log
    assert f"tiny/ipw seed 1 ({paths[1]}): hyperparameters.lr is 0.001 there, 1000000.0 now" in log
    assert not out.exists()
