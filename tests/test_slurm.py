"""Submission through profiles/slurm to a real SLURM cluster, and the local GPU profile.

The cluster is tests/slurm_cluster.py's one-node SLURM on loopback, with two dummy GPUs. A small
DAG of the demo (one seed of mostpop, whose training takes no GPU, and of POSIT, whose models feed the
weight landscape) runs end to end through the executor plugin and must give exactly what the local
CPU run of the completed demo gave for that seed. The profile under test is the one users get; the test only names the cluster's partition,
leaves the account out, and follows jobs with squeue (no accounting database here).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from snakemake.profiles import ProfileConfigFileParser

from semtail import job_resources, plan, registry
from slurm_cluster import SlurmCluster, SlurmUnavailable
from workflow_runs import (
    FULL_JOB_BLOCKS,
    REPO,
    copy_repo,
    copy_run,
    reduced_config,
    snakemake,
    snakemake_env,
    write_config,
)

# One machine-wide cluster: under pytest-xdist all of this file runs on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("slurm")

SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "profiles" / "default" / "config.yaml"


def parse_profile(path: Path) -> dict:
    """A profile as Snakemake reads it (YTE expressions evaluated, mappings turned into NAME=VALUE)."""
    stream = io.StringIO(path.read_text())
    stream.name = str(path)
    return dict(ProfileConfigFileParser().parse(stream))


# -- the profiles, without a cluster ------------------------------------------------------------


def test_slurm_profile_uses_the_executor_plugin_and_no_gres():
    profile = parse_profile(SLURM_PROFILE)
    assert profile["executor"] == "slurm"
    assert "--gres" not in SLURM_PROFILE.read_text()
    assert "slurm_extra" not in SLURM_PROFILE.read_text().split("#")[0]
    defaults = dict(entry.split("=", 1) for entry in profile["default-resources"])
    assert set(defaults) == {"slurm_partition", "slurm_account"}
    # GPU jobs ask through the plugin's gpu and cpus_per_gpu resources, declared by the rules.
    for rule, gpus in (
        ("train", 'from_config(job_resources.training_gpus, "method")'),
        ("evaluate", "job_resources.gpus_per_job(config)"),
    ):
        text = (REPO / "rules" / f"{rule}.smk").read_text()
        assert re.search(rf"^\s+gpu={re.escape(gpus)},$", text, re.M), rule
        assert re.search(r"^\s+cpus_per_gpu=cpus_per_gpu,$", text, re.M), rule


def test_unset_partition_and_account_stop_the_run_with_a_message(tmp_path):
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    write_config(workdir, reduced_config())
    done = snakemake(workdir, "--dry-run", "--workflow-profile", "profiles/slurm", check=False)
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert "slurm_partition, slurm_account" in message or "slurm_account, slurm_partition" in message
    assert "--default-resources slurm_account=" in message and "docs/running.md" in message


@pytest.mark.parametrize(
    "visible, nvidia_smi_gpus, expected",
    [
        (None, None, None),  # a laptop: no limit, the jobs run on the CPU
        ("0,1,2", None, 3),
        ("", None, None),
        ("2,-1,3", None, 1),  # CUDA reads up to the first invalid id
        (None, 4, 4),
        (None, 0, None),
    ],
)
def test_default_profile_limits_gpu_jobs_to_the_gpu_count(monkeypatch, tmp_path, visible, nvidia_smi_gpus, expected):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi_gpus is not None:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(nvidia_smi_gpus)))
        (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    profile = parse_profile(DEFAULT_PROFILE)
    assert profile["cores"] == "all"
    assert profile.get("resources") == (None if expected is None else [f"gpu={expected}"])


def test_local_gpu_limit_reaches_the_scheduler(tmp_path):
    """With three GPUs visible, Snakemake schedules with gpu=3 and every training job takes one,
    except those of the methods whose training needs no GPU (their declarations say which)."""
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    config = reduced_config()
    config["compute"]["device"] = "auto"
    write_config(workdir, config)
    env = snakemake_env()
    env["CUDA_VISIBLE_DEVICES"] = "0,1,2"
    planned = snakemake(workdir, "--dry-run", FULL_JOB_BLOCKS, env=env).stdout
    train_blocks = re.findall(r"rule train:\n(?:    .*\n)+", planned)
    # mostpop and ease_closed train once, the other methods once per seed
    assert len(train_blocks) == 2 + (len(config["methods"]) - 2) * len(config["seeds"])
    for block in train_blocks:
        method = re.search(r"wildcards: .*\bmethod=(\w+)", block).group(1)
        gpus = 1 if registry.declaration(plan.method_of(config, method)).gpu else 0
        assert re.search(rf"resources: .*\bgpu={gpus}\b", block), block
    # The limit shows when the scheduler starts: touch one (placeholder) output to start it.
    target = "data/raw/ml-100k/provenance.json"
    (workdir / target).parent.mkdir(parents=True)
    (workdir / target).write_text("{}\n")
    started = snakemake(workdir, "--forcerun", target, "--touch", target, env=env)
    assert re.search(r"Provided resources: .*gpu\D+3\b", started.stdout + started.stderr)
    env["CUDA_VISIBLE_DEVICES"] = ""  # and no GPU at all: no limit
    started = snakemake(workdir, "--forcerun", target, "--touch", target, env=env)
    assert "gpu" not in re.search(r"Provided resources:.*|$", started.stdout + started.stderr).group(0)


# -- a real SLURM -----------------------------------------------------------------------------


@pytest.fixture(scope="session")  # on the one worker of the "slurm" group: started once
def slurm_cluster():
    cluster = SlurmCluster(gpus=2)
    try:
        cluster.start()
    except SlurmUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_without_slurm_and_root_the_reason_is_given(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "_which", lambda name: None)
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(SlurmUnavailable, match="sbatch.*missing.*not root"):
        slurm_cluster.install()


@pytest.mark.slurm
def test_cluster_allocates_gpus_and_stops_its_own_daemons():
    cluster = SlurmCluster(gpus=2)
    try:
        cluster.start()
    except SlurmUnavailable as reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    try:
        daemons = {name: process.pid for name, process in cluster._daemons.items()}
        assert set(daemons) == {"munged", "slurmctld", "slurmd"}
        assert cluster.node_state() == "idle"
        step = subprocess.run(
            ["srun", "--gpus=1", "--ntasks=1", "--time=1", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert step.returncode == 0, step.stderr
        assert step.stdout.strip() == "0"
    finally:
        cluster.stop()
    for name, pid in daemons.items():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), name


def submit_args(cluster: SlurmCluster) -> list[str]:
    """profiles/slurm as users get it, told only this cluster's partition and how to follow jobs here."""
    return [
        "--workflow-profile",
        "profiles/slurm",
        "--default-resources",
        f"slurm_partition={cluster.partition}",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--latency-wait",
        "5",
        "--verbose",
    ]


def model_state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state"]


@pytest.mark.slow
@pytest.mark.slurm
def test_demo_on_slurm_equals_the_local_run(slurm_cluster, tmp_path, request):
    seeds, dataset = (0,), "ml-100k"
    config = reduced_config(seeds=seeds)
    config["methods"] = ["mostpop", "posit"]  # every kind of job the cluster is given, each once or twice

    # On SLURM, GPU jobs ask for a GPU: the cluster's dummy GPUs are allocated, CUDA finds none,
    # and the jobs fall back to the CPU, as `auto` says.
    on_gpu_machine = torch.cuda.is_available()
    config["compute"]["device"] = "cpu" if on_gpu_machine else "auto"
    workdir = copy_repo(tmp_path / "slurm")
    write_config(workdir, config)
    env = slurm_cluster.env
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["SEMTAIL_GPU_LOCK_DIR"] = str(tmp_path / "gpu-locks")
    done = snakemake(workdir, *submit_args(slurm_cluster), env=env, timeout_s=900)
    output = done.stdout + done.stderr

    # The local reference: the completed demo, with its table redone for these seeds and methods.
    # Asked for only now: the SLURM run above mostly waits on its scheduler, while the other
    # worker makes the session's demo (tests/conftest.py starts the two at once).
    local = copy_run(request.getfixturevalue("completed_demo"), tmp_path / "local")
    write_config(local, reduced_config(seeds=seeds) | {"methods": config["methods"]})
    snakemake(local, f"results/{dataset}/summary.csv")

    sbatch_calls = re.findall(r"sbatch call: (sbatch .*)", output)
    submitted = {re.search(r"--comment '?rule_(\w+?)_wildcards", call).group(1) for call in sbatch_calls}
    assert submitted == {"preprocess", "train", "evaluate", "plot_weight_landscape"}  # the rest are local
    stats = workdir / plan.split_files(config, dataset, ("stats",))["stats"]
    for call in sbatch_calls:
        assert f"-p {slurm_cluster.partition}" in call and "--gres" not in call
        rule, wildcards = re.search(r"--comment '?rule_(\w+?)_wildcards_([\w.-]+)", call).groups()
        # "ml-100k_ease_closed_seed-independent": dataset, method, run joined by "_", which method names may hold too
        method = wildcards.removeprefix(f"{dataset}_").rsplit("_", 1)[0] if rule in ("train", "evaluate") else None
        stage = "weight_landscape" if rule == "plot_weight_landscape" else rule
        # What the rule asked for, computed here from the same sizes, is what was submitted.
        sizes = stats if rule != "preprocess" else tmp_path / "not-yet-preprocessed.json"  # as at its submission
        wanted = job_resources.resources(config, stage, dataset, method=method, stats_file=sizes)
        assert re.search(rf"--mem {wanted['mem_mb']}\b", call) and re.search(rf"-t {wanted['runtime']}\b", call), call
        gpu_job = rule == "evaluate" or (rule == "train" and job_resources.training_gpus(config, method) > 0)
        if not on_gpu_machine:
            assert ("--gpus=1" in call) == gpu_job, call
            assert (f"--cpus-per-gpu={wanted['threads']}" in call) == gpu_job, call
        assert gpu_job or f"--cpus-per-task={wanted['threads']}" in call, call
    train_log = (workdir / f"logs/train/{dataset}/posit/seed0.log").read_text()
    if not on_gpu_machine:
        # SLURM sets CUDA_VISIBLE_DEVICES to the allocated GPU (its node index without device cgroups).
        assert re.search(r"claimed GPU [01] \(locks in .*slurm-job-\d+\)", train_log), train_log

    for method in config["methods"]:
        run = plan.run_dir(config, dataset, method, 0)
        ours = json.loads((workdir / run / "metrics.json").read_text())
        reference = json.loads((local / run / "metrics.json").read_text())
        assert ours["metrics"] == reference["metrics"], method
        for name, tensor in model_state(local / run / "model.pt").items():
            assert torch.equal(model_state(workdir / run / "model.pt")[name], tensor), (method, name)
        with np.load(workdir / run / "topk.npz") as a, np.load(local / run / "topk.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    assert (workdir / f"results/{dataset}/summary.csv").read_text() == (
        local / f"results/{dataset}/summary.csv"
    ).read_text()
    for figure in ("coverage_at_k", "lorenz", "weight_landscape"):
        assert (workdir / f"results/{dataset}/figures/{figure}.png").stat().st_size > 0
    assert slurm_cluster.node_state() == "idle"
    shutil.rmtree(workdir / ".snakemake" / "slurm_logs", ignore_errors=True)
