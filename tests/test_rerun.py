"""Selective rerun: after a complete demo run, each change makes Snakemake plan exactly the jobs
that depend on it, and running them rewrites exactly their files.

Every test works in its own copy of one completed run (the session's `completed_demo`), so the
changes it makes, to configs and even to source files, never touch the repository. The expected
jobs are built here from the config, the DAG as the issue states it: a method's training feeds its
evaluation, and rerank's training reads ease's model; the evaluations feed each dataset's tables and
figures; POSIT's models also feed the weight landscape.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_runs import (
    SECOND_DATASET,
    dependents,
    job,
    kill_group,
    output_times,
    planned_jobs,
    read_config,
    report_jobs,
    run_jobs,
    snakemake,
    snakemake_env,
    write_config,
    TEST_CONFIG,
)

pytestmark = pytest.mark.slow


def owner(path: str):
    """The job that writes a file under results/."""
    parts = Path(path).parts
    dataset = parts[1]
    if len(parts) == 5 and parts[3].startswith("seed"):
        method, seed = parts[2], parts[3].removeprefix("seed")
        rule = "train" if parts[4] == "model.pt" else "evaluate"
        return job(rule, dataset=dataset, method=method, seed=seed)
    if len(parts) == 4 and parts[2] == "figures":
        rule = "plot_weight_landscape" if parts[3].startswith("weight_landscape") else "plot"
        return job(rule, dataset=dataset)
    if len(parts) == 3:
        return job("aggregate", dataset=dataset)
    raise AssertionError(f"no job writes {path}")


def rewritten_by(workdir: Path, before: dict[str, int]) -> set:
    """The jobs whose files a run added or rewrote, from the files' modification times."""
    after = output_times(workdir)
    assert set(before) <= set(after), f"files disappeared: {sorted(set(before) - set(after))}"
    return {owner(path) for path, mtime in after.items() if before.get(path) != mtime}


FIGURE_RULES = ("plot", "plot_weight_landscape")


def assert_reruns_exactly(workdir: Path, expected: set, reason: str | None = None, figures: bool = False) -> dict:
    """Plan, check the plan, run, check what was rewritten, and that nothing is left to do.

    Drawing the figures takes most of a small run's time, so unless `figures`, the run leaves
    them out (--omit-from) and they must be exactly what is still planned afterwards."""
    planned = planned_jobs(workdir)
    assert set(planned) == expected, (
        f"planned but not expected: {sorted(map(str, set(planned) - expected))}\n"
        f"expected but not planned: {sorted(map(str, expected - set(planned)))}"
    )
    if reason is not None:
        for planned_job, why in planned.items():
            if planned_job.rule in ("train", "preprocess"):
                assert reason in why or "updated by another job" in why, f"{planned_job}: {why}"
    left_out = set() if figures else {j for j in expected if j.rule in FIGURE_RULES}
    before = output_times(workdir)
    snakemake(workdir, *([] if figures else ["--omit-from", *FIGURE_RULES]))
    assert rewritten_by(workdir, before) == {
        j for j in expected - left_out if j.rule not in ("download", "preprocess")
    }
    assert set(planned_jobs(workdir)) == left_out
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
    assert methods == ["ease", "rerank"]
    expected = run_jobs(config, methods=methods) | report_jobs(config, weight_landscape=False)
    planned = assert_reruns_exactly(demo_copy, expected)
    for dataset in config["datasets"]:
        assert "Params have changed" in planned[job("train", dataset=dataset, method="ease", seed=0)]


def test_preprocess_change_of_one_dataset_reruns_that_dataset_only(demo_copy):
    config = read_config(demo_copy)
    config["datasets"][SECOND_DATASET]["preprocess"]["min_uc"] += 2
    write_config(demo_copy, config)
    expected = (
        {job("preprocess", dataset=SECOND_DATASET)}
        | run_jobs(config, datasets=[SECOND_DATASET])
        | report_jobs(config, datasets=[SECOND_DATASET])
    )
    stats = demo_copy / f"data/processed/{SECOND_DATASET}/stats.json"
    users_before = json.loads(stats.read_text())["users"]
    assert_reruns_exactly(demo_copy, expected, reason="Params have changed")
    assert json.loads(stats.read_text())["users"] < users_before  # a stricter user filter kept fewer


def test_added_seed_runs_only_that_seed_and_the_reports(demo_copy):
    config = read_config(demo_copy)
    new_seed = max(config["seeds"]) + 1
    config["seeds"].append(new_seed)
    write_config(demo_copy, config)
    expected = run_jobs(config, seeds=[new_seed]) | report_jobs(config)
    assert_reruns_exactly(demo_copy, expected, figures=True)


def test_plans_for_other_config_changes(demo_copy):
    """Planned only (running them would repeat what the tests above run): a removed seed, new
    evaluation settings, and a dataset's sources."""
    config = read_config(demo_copy)
    original = read_config(demo_copy)

    config["seeds"] = config["seeds"][:1]
    write_config(demo_copy, config)
    assert set(planned_jobs(demo_copy)) == report_jobs(config)

    config = read_config(demo_copy) | {"seeds": original["seeds"]}
    config["evaluation"]["ks"] = [10, 20, 50, 100]
    write_config(demo_copy, config)
    evaluations = {j for j in run_jobs(config) if j.rule == "evaluate"}
    assert set(planned_jobs(demo_copy)) == evaluations | report_jobs(config, weight_landscape=False)

    config["evaluation"] = original["evaluation"]
    config["datasets"][SECOND_DATASET]["sources"] = config["datasets"][SECOND_DATASET]["sources"][::-1]
    write_config(demo_copy, config)
    assert set(planned_jobs(demo_copy)) == (
        {job("download", dataset=SECOND_DATASET), job("preprocess", dataset=SECOND_DATASET)}
        | run_jobs(config, datasets=[SECOND_DATASET])
        | report_jobs(config, datasets=[SECOND_DATASET])
    )

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
    module.write_text(module.read_text() + "\n\nCHANGED_BY_THE_RERUN_TEST = True\n")
    # Snakemake's own triggers, without params, see nothing: the module is no input or script of any rule.
    assert planned_jobs(demo_copy, "--rerun-triggers", "mtime", "input", "code") == {}
    expected = run_jobs(config, methods=["posit"]) | report_jobs(config)
    assert_reruns_exactly(demo_copy, expected, reason="Params have changed")
    for dataset in config["datasets"]:
        assert metrics_of(demo_copy, dataset, "posit", 0) == before[dataset]


def test_comment_and_formatting_changes_rerun_nothing(demo_copy):
    module = demo_copy / POSIT_MODULE
    source = module.read_text()
    module.write_text("# A comment added by the rerun test.\n" + source.replace("\n\n\n", "\n\n\n\n", 1))
    assert planned_jobs(demo_copy) == {}


def test_script_change_reruns_every_job_of_its_rule(demo_copy):
    """What Snakemake itself sees: a rule's script, by modification time, comments included."""
    config = read_config(demo_copy)
    script = demo_copy / "workflow_scripts/evaluate.py"
    script.write_text(script.read_text() + "\n# touched by the rerun test\n")
    planned = planned_jobs(demo_copy)
    evaluations = {j for j in run_jobs(config) if j.rule == "evaluate"}
    assert set(planned) == evaluations | report_jobs(config, weight_landscape=False)


@pytest.mark.parametrize(
    "path", ["README.md", "docs/running.md", "tests/test_config.py", "benchmarks/README.md", "configs/paper.yaml"]
)
def test_documentation_tests_and_other_configs_rerun_nothing(demo_copy, path):
    target = demo_copy / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((target.read_text() if target.exists() else "") + "\n# edited by the rerun test\n")
    assert planned_jobs(demo_copy) == {}


def test_killed_training_resumes_from_its_checkpoint(demo_copy, tmp_path):
    """A training job killed mid-run (SIGTERM, then SIGKILL, to Snakemake and the job alike)
    resumes from its last checkpoint under --rerun-incomplete and ends as an uninterrupted run."""
    config = read_config(demo_copy)
    dataset, method, seed = "ml-100k", "posit", 0
    # Long enough to be caught mid-run, and no early stop.
    epochs = 8
    config["overrides"] = {dataset: {method: {"epochs": epochs, "patience": epochs}}}
    write_config(demo_copy, config)
    run = f"results/{dataset}/{method}/seed{seed}"
    target = f"{run}/metrics.json"

    uninterrupted = demo_copy.parent / "uninterrupted"
    subprocess.run(["cp", "-a", str(demo_copy), str(uninterrupted)], check=True)
    snakemake(uninterrupted, target)

    checkpoint = demo_copy / run / "checkpoint.pt"
    log_file = demo_copy / f"logs/train/{dataset}/{method}/seed{seed}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", f"--configfile={TEST_CONFIG}", target],
        cwd=demo_copy, env=snakemake_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert process.poll() is None, f"snakemake ended before a checkpoint: {process.stdout.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        kill_group(process)
    assert not (demo_copy / run / "model.pt").exists(), "a model file was written by the killed job"
    epochs_done = len(re.findall(r"epoch \d+/\d+", log_file.read_text()))
    assert 1 <= epochs_done < epochs, f"the job was not caught mid-run ({epochs_done} of {epochs} epochs)"
    assert checkpoint.exists()

    snakemake(demo_copy, "--rerun-incomplete", target)
    resumed_log = log_file.read_text()
    assert re.search(r"resuming from .*checkpoint\.pt after epoch \d+", resumed_log), resumed_log
    first_epoch_logged = int(re.search(r"epoch (\d+)/\d+", resumed_log).group(1))
    assert first_epoch_logged > 1, "the restarted job began again at epoch 1"
    assert not checkpoint.exists(), "the checkpoint outlived the finished model"
    assert metrics_of(demo_copy, dataset, method, seed) == metrics_of(uninterrupted, dataset, method, seed)
