"""Workflow hygiene: the linter has nothing to say, the Snakefiles are snakefmt-formatted, every
rule logs, and a failed job's log says why. (That one failing method does not stop the others:
test_rerun.py, where a retrain diverges.)"""

from __future__ import annotations

import ast
import json
import re
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from semtail import plan
from workflow_runs import (
    FULL_JOB_BLOCKS,
    REPO,
    TEST_CONFIG,
    copy_repo,
    dry_run_blocks,
    read_config,
    reduced_config,
    snakemake,
    snakemake_env,
    write_config,
)

SNAKEFILES = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "rules").glob("*.smk"))]


def workflow_scripts() -> list[Path]:
    """The scripts named by the rules' `script:` directives."""
    scripts = []
    for snakefile in SNAKEFILES:
        text = (REPO / snakefile).read_text()
        for name in re.findall(r"^\s+script:\s*\n\s+\"([^\"]+)\"", text, re.M):
            scripts.append(((REPO / snakefile).parent / name).resolve())
    return scripts


@pytest.mark.parametrize("configfile", ["config.yaml", "configs/paper.yaml"])
def test_lint_has_nothing_to_say(tmp_path, configfile):
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    done = snakemake(workdir, "--lint", "--workflow-profile", "none", configfile=configfile, check=False)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    assert output == "Congratulations, your workflow is in a good condition!", output


def test_snakefiles_are_snakefmt_formatted():
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (pip install -e '.[test]')")
    done = subprocess.run([snakefmt, "--check", "--diff", *SNAKEFILES], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"run `snakefmt {' '.join(SNAKEFILES)}`:\n{done.stdout}{done.stderr}"


def ruff(*args: str) -> subprocess.CompletedProcess:
    """The project's ruff (pyproject.toml's [tool.ruff]), from this interpreter's environment."""
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)


def test_python_code_is_ruff_formatted():
    done = ruff("format", "--check", "--diff", ".")
    assert done.returncode == 0, (
        f"run `ruff format .` (pip install -e '.[test]' installs ruff):\n{done.stdout}{done.stderr}"
    )


def test_python_code_passes_the_linter():
    done = ruff("check", "--output-format", "concise", ".")
    assert done.returncode == 0, f"run `ruff check --fix .` and fix what is left:\n{done.stdout}{done.stderr}"


def test_every_job_has_a_log(tmp_path):
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    write_config(workdir, reduced_config())
    blocks = dry_run_blocks(snakemake(workdir, "--dry-run", FULL_JOB_BLOCKS).stdout)
    rules = {rule for rule, _ in blocks}
    assert {"download", "preprocess", "train", "evaluate", "aggregate", "plot", "plot_weight_landscape"} <= rules
    for rule, fields in blocks:
        if rule != "all":
            assert fields.get("log", "").startswith("logs/"), f"rule {rule} has no log: {fields}"


def test_the_default_console_prints_one_line_per_job_and_the_plan(tmp_path):
    """profiles/default: each job as its rule and wildcards, after a timestamp; then the job counts
    and reasons. FULL_JOB_BLOCKS gives back Snakemake's block per job."""
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    config = reduced_config(seeds=(0, 1))
    config["tuning"] = {"seeds": [0, 3], "grids": {"ease": {"lr": [0.001]}}}
    write_config(workdir, config)
    full = dry_run_blocks(snakemake(workdir, "--dry-run", FULL_JOB_BLOCKS).stdout)
    quiet = snakemake(workdir, "--dry-run").stdout
    job_lines = re.findall(r"^Job \d+: (.*)$", quiet, flags=re.MULTILINE)
    expected = []
    for rule, fields in full:
        wildcards = dict(pair.split("=", 1) for pair in fields.get("wildcards", "").split(", ") if pair)
        if rule in ("train", "evaluate"):
            expected.append(f"{rule} {wildcards['dataset']} {wildcards['method']} {wildcards['run']}")
        elif rule in ("tune_candidate", "tune_candidate_seed"):
            seed = wildcards.get("seed", "0")
            expected.append(
                f"tune_candidate {wildcards['dataset']} ease {wildcards['candidate']} seed {seed}: {{'lr': 0.001}}"
            )
        elif rule == "all":
            expected.append("all: the workflow's targets")
        elif rule == "resources_table":
            expected.append("resources_table: each job's peak memory and wall time against its declaration")
        elif rule == "select_hyperparameters":
            expected.append(f"{rule} {wildcards['dataset']} {wildcards['method']}")
        else:
            expected.append(f"{rule} {wildcards['dataset']}")
    assert sorted(job_lines) == sorted(expected) and len(job_lines) >= 20
    assert "tune_candidate ml-100k ease" in quiet and "seed 3: {'lr': 0.001}" in quiet
    # besides a timestamp and a line per job: the plan's job counts (twice: before and after the
    # search's selection) and its reasons, a few dozen lines in all whatever the number of jobs
    other = [
        line for line in quiet.splitlines() if not re.match(r"^(Job \d+: |\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]$)", line)
    ]
    assert len(other) <= 70, "\n".join(other)
    assert "output:" not in quiet and "reason:" not in quiet and "Job stats:" in quiet and "Reasons:" in quiet


def test_scripts_survive_snakemakes_script_preamble():
    """Snakemake puts its own code before a script's first line: a `from __future__` import is then
    a SyntaxError, and the module docstring is no longer `__doc__` (it is None)."""
    scripts = workflow_scripts()
    assert len(scripts) >= 7
    for script in scripts:
        tree = ast.parse(script.read_text(), filename=str(script))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                raise AssertionError(f"{script.name}:{node.lineno}: `from __future__` breaks under Snakemake's script:")
            if isinstance(node, ast.Name) and node.id == "__doc__":
                raise AssertionError(f"{script.name}:{node.lineno}: __doc__ is None under Snakemake's script:")


@pytest.mark.slow
def test_failed_preprocess_writes_its_reason_to_its_log(demo_copy):
    config = read_config(demo_copy)
    config["datasets"]["ml-100k"]["preprocess"]["n_heldout"] = 100_000  # more than ML-100K has users
    write_config(demo_copy, config)
    split = plan.processed_dir(config, "ml-100k")
    done = snakemake(demo_copy, f"{split}/stats.json", check=False)
    assert done.returncode != 0
    log = (demo_copy / f"logs/preprocess/ml-100k/{plan.split_key(config, 'ml-100k')}.log").read_text()
    assert "n_heldout" in log and "100000" in log.replace(",", ""), log
    assert not (demo_copy / f"{split}/stats.json").exists()


@pytest.mark.slow
def test_corrupt_raw_file_is_named_in_the_log(demo_copy):
    provenance = json.loads((demo_copy / "data/raw/ml-100k/provenance.json").read_text())
    raw_files = [demo_copy / "data/raw/ml-100k" / name for name in provenance["files"]]
    assert raw_files and all(raw.is_file() for raw in raw_files), provenance
    for raw in raw_files:
        lines = raw.read_text().splitlines(keepends=True)
        raw.write_text("".join(lines[: len(lines) // 2]) + "196\tnot-an-item\n" + "".join(lines[len(lines) // 2 :]))
    config = read_config(demo_copy)
    target = f"{plan.processed_dir(config, 'ml-100k')}/stats.json"
    done = snakemake(demo_copy, "--forcerun", target, "--until", "preprocess", target, check=False)
    assert done.returncode != 0, done.stdout[-2000:]
    log = (demo_copy / f"logs/preprocess/ml-100k/{plan.split_key(config, 'ml-100k')}.log").read_text()
    assert any(raw.name in log for raw in raw_files), log
    assert "Traceback" not in log or "Error" in log.splitlines()[-1]


def test_jobs_import_the_semtail_beside_the_snakefile(monkeypatch):
    """(The end-to-end proof is in test_rerun.py: a changed module in a copy is what its jobs run.)"""
    from semtail import plan

    monkeypatch.setenv("PYTHONPATH", f"/elsewhere{':'}/copy/workflow_scripts")
    plan.put_first_on_pythonpath("/copy/workflow_scripts")
    plan.put_first_on_pythonpath("/copy/workflow_scripts")
    import os

    assert os.environ["PYTHONPATH"] == "/copy/workflow_scripts:/elsewhere"


def interpreter_in(folder: Path) -> Path:
    """A virtual environment at `folder` seeing this one's packages, as `./workflow.sh` makes .venv
    inside the clone (without installing anything again)."""
    venv.create(folder, with_pip=False)
    [packages] = folder.glob("lib/python*/site-packages")
    (packages / "test_environment.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    )
    return folder / "bin" / "python"


@pytest.mark.slow
def test_a_clone_in_a_folder_with_a_space_runs_its_jobs(tmp_path):
    """Snakemake wrote its interpreter's path unquoted into each job's command, so from a clone in
    `my proj` with its .venv inside, every job failed with exit 127. Two jobs here (preprocess, and
    a train job), each a script run through that interpreter."""
    workdir = copy_repo(tmp_path / "my proj")
    interpreter = interpreter_in(workdir / ".venv")
    config = reduced_config(seeds=(0,))
    write_config(workdir, config)
    from semtail import plan

    model = f"{plan.run_dir(config, 'ml-100k', 'mostpop', 0)}/model.pt"
    done = subprocess.run(
        [str(interpreter), "-m", "snakemake", "--cores", "1", f"--configfile={TEST_CONFIG}", model],
        cwd=workdir,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit status 127" not in done.stderr
    assert (workdir / model).is_file()


def test_the_interpreter_is_quoted_once_for_the_shell(tmp_path, monkeypatch):
    from semtail import plan

    interpreter = tmp_path / "my proj" / "python"
    interpreter.parent.mkdir()
    interpreter.touch()
    monkeypatch.setattr(sys, "executable", str(interpreter))
    plan.quote_interpreter_for_shell()
    plan.quote_interpreter_for_shell()  # the workflow read again in the same process, as a module
    assert sys.executable == f"'{tmp_path}/my proj/python'"
