"""Selective rerun: after a complete demo run, each change makes Snakemake plan exactly the jobs
that depend on it, and running them rewrites exactly their files.

Every test works in its own copy of one completed run (the session's `completed_demo`), so the
changes it makes, to configs and even to source files, never touch the repository. The expected
jobs are built here from the config, the DAG as the issue states it: a method's training feeds its
evaluation, and the training of rerank and post reads ease's model; the evaluations feed each
dataset's tables and figures; POSIT's models also feed the weight landscape and the adversary's
table and figure.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from semtail import plan
from workflow_runs import (
    SECOND_DATASET,
    SGD_METHODS,
    TEST_CONFIG,
    dependents,
    job,
    kill_group,
    method_named,
    output_times,
    planned_jobs,
    ran_jobs,
    read_config,
    report_jobs,
    run_jobs,
    second_dataset_config,
    snakemake,
    snakemake_env,
    write_config,
)

pytestmark = pytest.mark.slow


def owner(path: str):
    """The job that writes a file under results/."""
    parts = Path(path).parts
    if parts[1:] == ("resources.csv",):
        return job("resources_table")
    dataset = parts[1]
    if len(parts) == 5 and parts[3].startswith("seed"):  # seed<N> or seed-independent
        rule = "train" if parts[4] == "model.pt" else "evaluate"
        return job(rule, dataset=dataset, method=parts[2], run=parts[3])
    if len(parts) == 4 and parts[2] == "figures":
        rule = {"weight_landscape": "plot_weight_landscape", "adversary": "plot_adversary"}.get(
            parts[3].split(".")[0], "plot"
        )
        return job(rule, dataset=dataset)
    if len(parts) == 3:
        return job("plot_adversary" if parts[2].startswith("adversary.") else "aggregate", dataset=dataset)
    raise AssertionError(f"no job writes {path}")


def rewritten_by(workdir: Path, before: dict[str, int]) -> set:
    """The jobs whose files a run added or rewrote, from the files' modification times."""
    after = output_times(workdir)
    assert set(before) <= set(after), f"files disappeared: {sorted(set(before) - set(after))}"
    return {owner(path) for path, mtime in after.items() if before.get(path) != mtime}


FIGURE_RULES = ("plot", "plot_weight_landscape", "plot_adversary")


def assert_reruns_exactly(workdir: Path, expected: set, reason: str | None = None, figures: bool = False) -> dict:
    """Run; check that the jobs run and those still planned after it are exactly `expected`,
    that the run rewrote exactly the files of the jobs it ran, and the reason for each training.

    Drawing the figures takes most of a small run's time, so unless `figures`, the run leaves
    them out (--omit-from) and they must be exactly what is still planned afterwards. (The jobs a
    run plans are those it runs: the run's own job blocks stand for a dry run before it.)"""
    before = output_times(workdir)
    ran = ran_jobs(workdir, *([] if figures else ["--omit-from", *FIGURE_RULES]))
    still_planned = planned_jobs(workdir)
    planned = still_planned | ran
    assert set(planned) == expected, (
        f"planned but not expected: {sorted(map(str, set(planned) - expected))}\n"
        f"expected but not planned: {sorted(map(str, expected - set(planned)))}"
    )
    if reason is not None:
        for planned_job, why in ran.items():
            if planned_job.rule in ("train", "preprocess"):
                assert reason in why or "updated by another job" in why, f"{planned_job}: {why}"
    # resources.csv reads the figures' benchmark records: --omit-from leaves it out with them
    left_out = set() if figures else {j for j in expected if j.rule in (*FIGURE_RULES, "resources_table")}
    assert set(still_planned) == left_out
    assert rewritten_by(workdir, before) == {j for j in set(ran) if j.rule not in ("download", "preprocess")}
    return planned


def metrics_of(workdir: Path, dataset: str, method: str, seed) -> dict:
    return json.loads((workdir / f"results/{dataset}/{method}/seed{seed}/metrics.json").read_text())["metrics"]


def test_complete_run_plans_nothing(demo_copy):
    assert planned_jobs(demo_copy) == {}


def test_hyperparameter_change_reruns_that_method_and_its_dependents(demo_copy):
    config = read_config(demo_copy)
    config["hyperparameters"]["ease"]["lr"] *= 2
    write_config(demo_copy, config)
    methods = dependents(config, "ease")
    assert methods == ["ease", "rerank", "post"]
    expected = run_jobs(config, methods=methods) | report_jobs(config, weight_landscape=False)
    planned = assert_reruns_exactly(demo_copy, expected)
    for dataset in config["datasets"]:
        assert "Params have changed" in planned[job("train", dataset=dataset, method="ease", run="seed0")]


def test_preprocess_change_of_one_dataset_reruns_that_dataset_only(demo_copy):
    """A second dataset (the same ratings, fewer users) is added and run; then a preprocessing
    value of it changes: all of it reruns, on a split of its own beside the first one, and nothing
    of the first dataset. Both datasets run one seed of four methods (a seed-independent one, an
    SGD one with the on-base one that reads its model, and POSIT for the adversary's reports): the
    jobs of every kind, a quarter of the demo's. The first dataset's reports are redone for them
    first, so that it is complete before the second dataset is added."""
    config = read_config(demo_copy)
    config["seeds"], config["methods"] = [0], ["mostpop", "ease", "rerank", "posit"]
    write_config(demo_copy, config)
    snakemake(demo_copy)
    config["datasets"][SECOND_DATASET] = second_dataset_config(config)
    write_config(demo_copy, config)
    snakemake(demo_copy, "--omit-from", *FIGURE_RULES)
    stats_before = demo_copy / plan.split_files(config, SECOND_DATASET, ("stats",))["stats"]
    users_before = json.loads(stats_before.read_text())["users"]

    config["datasets"][SECOND_DATASET]["preprocess"]["min_uc"] += 2
    write_config(demo_copy, config)
    expected = (
        {job("preprocess", dataset=SECOND_DATASET, split=plan.split_key(config, SECOND_DATASET))}
        | run_jobs(config, datasets=[SECOND_DATASET])
        | report_jobs(config, datasets=[SECOND_DATASET])
    )
    assert_reruns_exactly(demo_copy, expected, reason="Missing output files")
    stats = demo_copy / plan.split_files(config, SECOND_DATASET, ("stats",))["stats"]
    assert json.loads(stats.read_text())["users"] < users_before  # a stricter user filter kept fewer
    assert json.loads(stats_before.read_text())["users"] == users_before  # the first split is kept

    # Its sources, too (planned only): the download that ran here recorded them.
    config["datasets"][SECOND_DATASET]["sources"] = config["datasets"][SECOND_DATASET]["sources"][::-1]
    write_config(demo_copy, config)
    planned = planned_jobs(demo_copy)
    assert set(planned) == {job("download", dataset=SECOND_DATASET)} | expected
    assert "Params have changed" in planned[job("download", dataset=SECOND_DATASET)]


def test_added_seed_runs_only_that_seed_and_the_reports(demo_copy):
    config = read_config(demo_copy)
    new_seed = max(config["seeds"]) + 1
    config["seeds"].append(new_seed)
    write_config(demo_copy, config)
    expected = run_jobs(config, seeds=[new_seed]) | report_jobs(config)
    assert_reruns_exactly(demo_copy, expected)


def test_plans_for_other_config_changes(demo_copy):
    """Planned only (running them would repeat what the tests above run): a removed seed and new
    evaluation settings. (A dataset's sources: in the preprocessing test, where its download ran.)"""
    config = read_config(demo_copy)
    original = read_config(demo_copy)

    config["seeds"] = config["seeds"][:1]
    write_config(demo_copy, config)
    assert set(planned_jobs(demo_copy)) == report_jobs(config)

    config = read_config(demo_copy) | {"seeds": original["seeds"]}
    config["evaluation"]["ks"] = [10, 20, 50, 100]
    write_config(demo_copy, config)
    evaluations = {j for j in run_jobs(config) if j.rule == "evaluate"}
    # The weight landscape reads POSIT's items.npz, which its evaluation writes again.
    assert set(planned_jobs(demo_copy)) == evaluations | report_jobs(config)

    config["evaluation"] = original["evaluation"]

    write_config(demo_copy, original)
    assert planned_jobs(demo_copy) == {}


POSIT_MODULE = "workflow_scripts/semtail/models/posit.py"


def test_model_code_change_reruns_that_method_only(demo_copy):
    """Snakemake does not see imported modules; params.code_version (a hash of their syntax trees)
    makes a change to models/posit.py rerun POSIT, and its reports, and nothing else. The retrained
    models are the same, so are the metrics."""
    config = read_config(demo_copy)
    before = {d: metrics_of(demo_copy, d, "posit", 0) for d in config["datasets"]}
    module = demo_copy / POSIT_MODULE
    # A real change, which also shows that the jobs run this copy's code, not the repository's.
    marker = demo_copy / "posit-imported-from.txt"
    module.write_text(
        module.read_text() + f"\n\nimport pathlib\n\npathlib.Path({str(marker)!r}).write_text(__file__)\n"
    )
    # Snakemake's own triggers, without params, see nothing: the module is no input or script of any rule.
    assert planned_jobs(demo_copy, "--rerun-triggers", "mtime", "input", "code") == {}
    expected = run_jobs(config, methods=["posit"]) | report_jobs(config)
    # With the figures: left for later, the weight landscape would not be planned again, since
    # POSIT's items.npz come out the same and Snakemake compares a small file's checksum.
    assert_reruns_exactly(demo_copy, expected, reason="Params have changed", figures=True)
    assert marker.read_text() == str(module)
    for dataset in config["datasets"]:
        assert metrics_of(demo_copy, dataset, "posit", 0) == before[dataset]


def test_shared_module_change_reruns_every_method_that_imports_it(demo_copy):
    """Planned only: training.py is behind the SGD methods (and, through ease's model, rerank and
    post), not behind mostpop or the closed-form EASE, whose jobs stay as they are."""
    config = read_config(demo_copy)
    module = demo_copy / "workflow_scripts/semtail/training.py"
    module.write_text(module.read_text() + "\n\nADDED_BY_THE_RERUN_TEST = 1\n")
    methods = sorted({m for sgd in SGD_METHODS if sgd in config["methods"] for m in dependents(config, sgd)})
    assert methods == ["causal", "cvar", "ease", "ipw", "posit", "post", "rerank"]
    planned = planned_jobs(demo_copy)
    assert set(planned) == run_jobs(config, methods=methods) | report_jobs(config)
    sgd_trained = {
        j: why
        for j, why in planned.items()
        if j.rule == "train" and method_named(config, dict(j.wildcards)["method"]) in SGD_METHODS
    }
    assert sgd_trained and all("Params have changed" in why for why in sgd_trained.values())


def test_comment_docstring_and_formatting_changes_rerun_nothing(demo_copy):
    module = demo_copy / POSIT_MODULE
    source = module.read_text()
    source = source.replace(
        '    """Per row: the k-th best score', '    """Per row, as the rerun test rewrote it: the k-th best score', 1
    )
    module.write_text("# A comment added by the rerun test.\n" + source.replace("\n\n\n", "\n\n\n\n", 1))
    assert "as the rerun test rewrote it" in module.read_text()  # a docstring changed too
    assert planned_jobs(demo_copy) == {}


def test_script_change_reruns_every_job_of_its_rule(demo_copy):
    """What Snakemake itself sees: a rule's script, by modification time, comments included."""
    config = read_config(demo_copy)
    script = demo_copy / "workflow_scripts/evaluate.py"
    script.write_text(script.read_text() + "\n# touched by the rerun test\n")
    planned = planned_jobs(demo_copy)
    evaluations = {j for j in run_jobs(config) if j.rule == "evaluate"}
    assert set(planned) == evaluations | report_jobs(config)
    assert all(planned[j] == "Code has changed since last execution" for j in evaluations)
    # Without the code trigger the script is not looked at.
    assert planned_jobs(demo_copy, "--rerun-triggers", "mtime", "params", "input") == {}


def test_documentation_tests_and_other_configs_rerun_nothing(demo_copy):
    """All edited at once, planned once: a change never cancels another's rerun, so nothing planned
    after all of them means nothing planned after any one."""
    for path in ["README.md", "docs/running.md", "tests/test_config.py", "benchmarks/README.md", "configs/paper.yaml"]:
        target = demo_copy / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((target.read_text() if target.exists() else "") + "\n# edited by the rerun test\n")
    assert planned_jobs(demo_copy) == {}


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """snakemake in a process group of its own (its jobs included), to be killed as a whole."""
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", f"--configfile={TEST_CONFIG}", *args],
        cwd=workdir,
        env=snakemake_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_checkpoint(process: subprocess.Popen, log_file: Path, after_epoch: int, timeout_s: float = 300) -> int:
    """Wait until the job's log reports a checkpoint after an epoch later than `after_epoch`."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_file.read_text() if log_file.exists() else ""
        written = [int(e) for e in re.findall(r"checkpoint after epoch (\d+) written", text)]
        if written and max(written) > after_epoch:
            return max(written)
        if process.poll() is not None:
            raise AssertionError(f"snakemake ended before the checkpoint:\n{process.stdout.read().decode()}")
        assert time.monotonic() < deadline, f"no checkpoint after epoch {after_epoch} within {timeout_s} s"
        time.sleep(0.02)


def test_killed_training_resumes_from_its_checkpoint(demo_copy):
    """A training job killed mid-run resumes from its last checkpoint when the workflow is started
    again with --rerun-incomplete, and ends as an uninterrupted run does. Killed twice: once all at
    once (SIGKILL to Snakemake and the job, as when a machine dies: Snakemake leaves its lock
    behind), once as a scheduler does (SIGTERM, then SIGKILL). The model file is written at the
    end, atomically, so no half-written output is ever left for Snakemake to find."""
    config = read_config(demo_copy)
    dataset, method, seed, epochs = "ml-100k", "posit", 0, 10
    config["overrides"] = {dataset: {method: {"epochs": epochs, "patience": epochs}}}  # no early stop
    config["checkpoints"] = {"every_epochs": 2, "min_seconds": 0}  # the job reads its cadence from the config
    write_config(demo_copy, config)
    run = f"results/{dataset}/{method}/seed{seed}"
    shutil.rmtree(demo_copy / run)  # never trained with these settings, never evaluated
    target = f"{run}/metrics.json"
    checkpoint = demo_copy / run / "checkpoint.pt"
    log_file = demo_copy / f"logs/train/{dataset}/{method}/seed{seed}.log"

    uninterrupted = demo_copy.parent / "uninterrupted"
    shutil.copytree(demo_copy, uninterrupted, symlinks=True)
    snakemake(uninterrupted, target)

    # A hard kill after the first checkpoint.
    log_file.unlink()  # the completed run's log would report its checkpoints
    process = start_snakemake(demo_copy, target)
    try:
        first = wait_for_checkpoint(process, log_file, after_epoch=0)
    finally:
        kill_group(process, grace_s=0, first_signal=signal.SIGKILL)
    assert first < epochs, "the job finished before it could be killed"
    assert checkpoint.exists() and not (demo_copy / run / "model.pt").exists()
    locked = snakemake(demo_copy, target, check=False)  # the killed Snakemake could not unlock
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(demo_copy, "--unlock", target)

    # Resumed, then killed again as a scheduler does, further on.
    process = start_snakemake(demo_copy, "--rerun-incomplete", target)
    try:
        second = wait_for_checkpoint(process, log_file, after_epoch=first)
    finally:
        kill_group(process, grace_s=2)
    first_log = log_file.read_text()
    assert f"resuming from {run}/checkpoint.pt after epoch {first}" in first_log, first_log
    assert second < epochs, "the job finished before it could be killed"
    assert not (demo_copy / run / "model.pt").exists()

    snakemake(demo_copy, "--rerun-incomplete", target)
    final_log = log_file.read_text()
    resumed_at = re.search(r"resuming from \S+checkpoint\.pt after epoch (\d+)", final_log)
    assert resumed_at and int(resumed_at.group(1)) >= second, final_log
    assert f"epoch 1/{epochs}" not in final_log, "the restarted job began again at epoch 1"
    assert not checkpoint.exists(), "the checkpoint outlived the finished model"
    written = [
        int(e) for log in (first_log, final_log) for e in re.findall(r"checkpoint after epoch (\d+) written", log)
    ]
    assert written and all(epoch % 2 == 0 for epoch in written), written
    assert metrics_of(demo_copy, dataset, method, seed) == metrics_of(uninterrupted, dataset, method, seed)
    reference = torch.load(uninterrupted / run / "model.pt", weights_only=True)
    resumed = torch.load(demo_copy / run / "model.pt", weights_only=True)
    assert torch.equal(resumed["state"]["U"], reference["state"]["U"])
    assert resumed["best_epoch"] == reference["best_epoch"]


def test_a_variant_runs_beside_its_method_and_reruns_alone(demo_copy):
    """A variant of POSIT added to the config trains into a folder of its own, and leaves posit's
    files as they were; changing its settings plans its jobs and the tables again, nothing of posit."""
    config = read_config(demo_copy)
    posit_before = metrics_of(demo_copy, "ml-100k", "posit", 0)
    config["methods"].append("posit_share")
    config["variants"] = {"posit_share": {"method": "posit", "ties": "share"}}
    write_config(demo_copy, config)
    expected = run_jobs(config, methods=["posit_share"]) | report_jobs(config, weight_landscape=False)
    assert_reruns_exactly(demo_copy, expected)
    variant = torch.load(demo_copy / "results/ml-100k/posit_share/seed0/model.pt", weights_only=True)
    assert (variant["method"], variant["variant"], variant["hyperparameters"]["ties"]) == (
        "posit",
        "posit_share",
        "share",
    )
    assert metrics_of(demo_copy, "ml-100k", "posit", 0) == posit_before

    # Planned only: running these jobs again would check what the run above checked.
    config["variants"]["posit_share"]["nstd"] = 0.5
    write_config(demo_copy, config)
    planned = planned_jobs(demo_copy)
    assert set(planned) == expected
    for seed in config["seeds"]:
        reason = planned[job("train", dataset="ml-100k", method="posit_share", run=f"seed{seed}")]
        assert "Params have changed" in reason


def test_a_failed_or_killed_retrain_is_redone_and_never_tabulated_stale(demo_copy):
    """Issue 17's two sequences. A retrain that diverges (its model files removed, the old
    metrics.json left, its log naming the cause, while the other methods' pending jobs finish
    under --keep-going), and one of whose seeds is killed by SIGTERM while the other seed completes:
    the next run redoes them, rather than finding nothing to do and leaving tables of the old
    settings, or of old and new mixed. The evaluate jobs carry what their run must be trained with,
    so their recorded params tell. Told to go on without params, the tables refuse the stale runs."""
    config = read_config(demo_copy)
    dataset, seeds = "ml-100k", config["seeds"]
    run = {seed: demo_copy / f"results/{dataset}/ipw/seed{seed}" for seed in seeds}
    train_log = {seed: demo_copy / f"logs/train/{dataset}/ipw/seed{seed}.log" for seed in seeds}
    summary = demo_copy / f"results/{dataset}/summary.csv"
    old_lr = config["hyperparameters"]["ipw"]["lr"]

    config["hyperparameters"]["ipw"]["lr"] = 1.0e6
    write_config(demo_copy, config)
    # Under --keep-going the other methods' pending jobs finish: the one run of two of them, removed.
    pending = ["mostpop", "ease_closed"]
    for method in pending:
        shutil.rmtree(demo_copy / f"results/{dataset}/{method}/seed-independent")
    failed = snakemake(demo_copy, "--keep-going", "--omit-from", *FIGURE_RULES, check=False)
    assert failed.returncode != 0
    for seed in seeds:
        log = train_log[seed].read_text()
        assert "became NaN or infinite in epoch 1" in log
        assert all(named in log for named in (dataset, "ipw", f"seed {seed}", "lr")), log
        assert f"logs/train/{dataset}/ipw/seed{seed}.log" in failed.stdout + failed.stderr
        assert not (run[seed] / "model.pt").exists() and (run[seed] / "metrics.json").exists()
    for method in pending:
        assert (demo_copy / f"results/{dataset}/{method}/seed-independent/metrics.json").is_file(), method
    assert set(planned_jobs(demo_copy)) == run_jobs(config, methods=["ipw"]) | report_jobs(
        config, weight_landscape=False
    )

    refused = snakemake(demo_copy, "--rerun-triggers", "mtime", "input", "code", "--forcerun", "aggregate", check=False)
    assert refused.returncode != 0
    aggregate_log = (demo_copy / f"logs/aggregate/{dataset}.log").read_text()
    for seed in seeds:
        metrics = f"results/{dataset}/ipw/seed{seed}/metrics.json"
        assert (
            f"{dataset}/ipw seed {seed} ({metrics}): hyperparameters.lr is {old_lr!r} there, 1000000.0 now"
            in aggregate_log
        )
    assert "redo them: snakemake --cores all --forcerun results/ml-100k/ipw/seed0/model.pt" in aggregate_log
    assert not summary.exists()  # the failed job's outputs are removed: no stale table is left

    ipw = config["hyperparameters"]["ipw"]
    ipw.update(lr=old_lr, alpha=ipw["alpha"] * 2, epochs=6, patience=6)
    write_config(demo_copy, config)
    snakemake(demo_copy, f"results/{dataset}/ipw/seed1/metrics.json")
    process = start_snakemake(demo_copy, f"results/{dataset}/ipw/seed0/model.pt")
    try:
        deadline = time.monotonic() + 300
        while "epoch 1/6" not in (train_log[0].read_text() if train_log[0].exists() else ""):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the train job did not reach its first epoch within 300 s"
            time.sleep(0.02)
        jobs = [  # the job's Python process, under Snakemake's shell (psutil: a dependency of Snakemake)
            p
            for p in psutil.Process(process.pid).children(recursive=True)
            if p.name().startswith("python") and "train.py" in " ".join(p.cmdline())
        ]
        assert len(jobs) == 1, jobs
        jobs[0].send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        kill_group(process, grace_s=0)
    assert process.returncode != 0
    last_line = train_log[0].read_text().splitlines()[-1]
    assert re.search(
        r"ml-100k/ipw seed 0: terminated by signal at epoch [2-6]; rerun with --rerun-incomplete to resume", last_line
    ), last_line
    assert not (run[0] / "model.pt").exists() and not [p for p in run[0].iterdir() if "partial" in p.name]

    expected = {
        job("train", dataset=dataset, method="ipw", run="seed0"),
        job("evaluate", dataset=dataset, method="ipw", run="seed0"),
    }
    assert_reruns_exactly(demo_copy, expected | report_jobs(config, weight_landscape=False))
    records = [json.loads((run[seed] / "metrics.json").read_text()) for seed in seeds]
    assert all(record["hyperparameters"] == ipw | {"lr": old_lr} for record in records)
    written = pd.read_csv(summary).set_index("method").loc["ipw"]
    assert written["n_seeds"] == len(seeds)
    assert written["ndcg@100_mean"] == pytest.approx(sum(r["metrics"]["ndcg@100"] for r in records) / len(seeds))
