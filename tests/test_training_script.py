"""workflow_scripts/train.py and tune_candidate.py end to end through their command line (script_run),
on a tiny split."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch
import yaml

from semtail.modelfile import load_model
from semtail.models.synthetic import training_data
from synthetic_data import save_training_split

TOY = training_data(120, 25, 5, 30, seed=2)  # the split the script runs below train on
ROOT = Path(__file__).resolve().parents[1]


def run_script(tmp_path, method, hyperparameters, extra_inputs=(), extra_args=()):
    command, env = script_command(tmp_path, method, hyperparameters, extra_inputs, extra_args)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def start_script(tmp_path, method, hyperparameters, extra_inputs=(), extra_args=()):
    command, env = script_command(tmp_path, method, hyperparameters, extra_inputs, extra_args)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def script_command(tmp_path, method, hyperparameters, extra_inputs=(), extra_args=()):
    params = tmp_path / f"{method}.yaml"
    params.write_text(yaml.safe_dump({"hyperparameters": hyperparameters}))
    command = [sys.executable, str(ROOT / "workflow_scripts" / "train.py")]
    for name in ("train", "validation_tr", "validation_te"):
        command += ["--input", f"{name}={tmp_path / f'{name}.npz'}"]
    for item in extra_inputs:
        command += ["--input", item]
    command += [
        "--output",
        f"model={tmp_path / f'{method}.pt'}",
        "--params",
        str(params),
        "--param",
        "dataset=toy",
        "--param",
        f"method={method}",
        "--param",
        "seed=1",
        "--param",
        "device=cpu",
        "--param",
        f"checkpoint={tmp_path / f'{method}.checkpoint.pt'}",
        "--log",
        str(tmp_path / f"{method}.log"),
        *extra_args,
    ]
    return command, {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts")}


def test_train_script_end_to_end(tmp_path):
    save_training_split(tmp_path, TOY)
    hyperparameters = {"lr": 0.002, "wd": 1e-4, "batch_size": 40, "epochs": 2, "patience": 2, "drop_last": False}
    done = run_script(tmp_path, "ease", hyperparameters)
    assert done.returncode == 0, done.stderr
    model = load_model(tmp_path / "ease.pt")
    assert (model["dataset"], model["method"], model["seed"], model["n_items"]) == ("toy", "ease", 1, 25)
    assert model["hyperparameters"] == hyperparameters and len(model["history"]) == 2
    assert len(model["code_version"]) == 16  # computed by provenance when not passed
    assert not (tmp_path / "ease.checkpoint.pt").exists()
    log = (tmp_path / "ease.log").read_text()
    assert "epoch 2/2" in log and "val_ndcg@100" in log

    done = run_script(
        tmp_path, "rerank", {"base": "ease", "high": 0.5, "low": 0.1}, [f"base_model={tmp_path / 'ease.pt'}"]
    )
    assert done.returncode == 0, done.stderr
    assert torch.equal(load_model(tmp_path / "rerank.pt")["state"]["base"], model["state"]["U"])


def test_train_script_reports_bad_input(tmp_path):
    data = training_data(50, 10, 3, 10, seed=2)
    for name in ("train", "validation_tr"):
        sp.save_npz(tmp_path / f"{name}.npz", getattr(data, name))
    done = run_script(tmp_path, "mostpop", {})
    assert done.returncode != 0
    assert "validation_te.npz: file not found" in done.stderr
    assert not (tmp_path / "mostpop.pt").exists()


def test_train_script_takes_the_checkpoint_cadence_from_a_workflow_config(tmp_path):
    save_training_split(tmp_path, TOY)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checkpoints": {"every_epochs": 2, "min_seconds": 0}}))
    hyperparameters = {"lr": 0.002, "wd": 1e-4, "batch_size": 40, "epochs": 5, "patience": 5, "drop_last": False}
    done = run_script(tmp_path, "ease", hyperparameters, extra_args=["--configfile", str(config)])
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "ease.log").read_text()
    assert [int(e) for e in re.findall(r"checkpoint after epoch (\d+) written", log)] == [2, 4]

    config.write_text(yaml.safe_dump({"checkpoints": {"every_epochs": 0}}))
    done = run_script(tmp_path, "ease", hyperparameters, extra_args=["--configfile", str(config)])
    assert done.returncode != 0 and "checkpoints.every_epochs must be an integer of at least 1, got 0" in done.stderr


def test_a_search_candidate_takes_the_checkpoint_cadence_from_a_workflow_config_too(tmp_path):
    data = training_data(120, 25, 5, 30, seed=2)
    command = [sys.executable, str(ROOT / "workflow_scripts" / "tune_candidate.py")]
    for name in ("train", "validation_tr", "validation_te"):
        sp.save_npz(tmp_path / f"{name}.npz", getattr(data, name))
        command += ["--input", f"{name}={tmp_path / f'{name}.npz'}"]
    params = {
        "dataset": "toy",
        "method": "ease",
        "variant": "ease_long",
        "candidate": "abc",
        "settings": {"epochs": 5},
        "seed": 1,
        "device": "cpu",
        "checkpoint": str(tmp_path / "candidate.checkpoint.pt"),
        "hyperparameters": {"lr": 0.002, "wd": 1e-4, "batch_size": 40, "epochs": 5, "patience": 5, "drop_last": False},
        "evaluation": {"ks": [5, 20], "coverage_block_size": 10, "tail_interaction_share": 0.2, "batch_size": 16},
    }
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(params))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checkpoints": {"every_epochs": 2, "min_seconds": 0}}))
    command += [
        "--output",
        f"validation={tmp_path / 'validation.json'}",
        "--params",
        str(tmp_path / "candidate.yaml"),
        "--log",
        str(tmp_path / "candidate.log"),
        "--configfile",
        str(config),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "candidate.log").read_text()
    assert [int(e) for e in re.findall(r"checkpoint after epoch (\d+) written", log)] == [2, 4]
    record = json.loads((tmp_path / "validation.json").read_text())
    assert (record["method"], record["trains"], record["candidate"]) == ("ease_long", "ease", "abc")
    assert len(record["code_version"]) == 16 and not (tmp_path / "candidate.checkpoint.pt").exists()


def test_train_script_ended_by_sigterm_says_where_it_stopped_and_resumes(tmp_path):
    """SIGTERM, as a cluster's time limit sends it, to the script while it trains: it exits with
    128 + 15, leaves no half-written file, and its log ends with the epoch it was in and how to
    resume; run again, it resumes from its last checkpoint."""
    save_training_split(tmp_path, TOY)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"checkpoints": {"every_epochs": 1, "min_seconds": 0}}))
    long_run = {"lr": 0.002, "wd": 1e-4, "batch_size": 40, "epochs": 100_000, "patience": 100_000, "drop_last": False}
    log_file = tmp_path / "ease.log"
    arguments = dict(method="ease", hyperparameters=long_run, extra_args=["--configfile", str(config)])
    process = start_script(tmp_path, **arguments)
    try:
        deadline = time.monotonic() + 120
        while "checkpoint after epoch 3 written" not in (log_file.read_text() if log_file.exists() else ""):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after epoch 3 within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 60 s after SIGTERM; its log ends:\n" + log_file.read_text()[-2000:])
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    last_line = log_file.read_text().splitlines()[-1]
    stopped = re.search(
        r"ERROR train: toy/ease seed 1: terminated by signal at epoch (\d+); rerun with --rerun-incomplete to resume "
        r"from the checkpoint after epoch (\d+)$",
        last_line,
    )
    assert stopped, last_line
    epoch, checkpoint_epoch = int(stopped.group(1)), int(stopped.group(2))
    # the epoch under way: one after the checkpoint, or two if the next checkpoint's write was cut short
    assert checkpoint_epoch >= 3 and checkpoint_epoch < epoch <= checkpoint_epoch + 2
    assert not [path.name for path in tmp_path.iterdir() if "partial" in path.name]
    assert not (tmp_path / "ease.pt").exists()

    process = start_script(tmp_path, **arguments)  # stopped as soon as it resumed
    try:
        deadline = time.monotonic() + 120
        while "resuming from" not in (log_file.read_text() if log_file.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, "the rerun did not resume"
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert f"after epoch {checkpoint_epoch} " in log_file.read_text()
