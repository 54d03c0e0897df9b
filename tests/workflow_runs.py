"""Running the real workflow in throw-away copies of the repository, for the end-to-end tests
(test_rerun.py, test_slurm.py, test_workflow_hygiene.py).

A copy holds the repository's own files (what git tracks or would track) and the raw-data cache
(data/raw), never results. The demo runs on ML-100K, fetched by the download stage (through pip's
RecBole wheel where GroupLens is out of reach), with fewer seeds and epochs than config.yaml.
"""

from __future__ import annotations

import copy
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from semtail import plan, registry

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = "test-config.yaml"
DEMO_DATASET = "ml-100k"
SECOND_DATASET = "ml-100k-min50"
SGD_METHODS = tuple(name for name, method in registry.methods().items() if method.training == "sgd")
ON_BASE_METHODS = ("rerank", "post")  # their training reads the model file of the run their `base` names
# The default profile prints one line per job; this gives back Snakemake's block per job (rule,
# output, log, wildcards, reason, resources), which dry_run_blocks reads.
FULL_JOB_BLOCKS = "--quiet=host"
SNAKEMAKE_TIMEOUT_S = 900  # hangs are silent: every snakemake call is bounded


def repo_files() -> list[str]:
    """The files of the repository: tracked, or untracked and not ignored (work in progress)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sorted({name for name in listed if name and (REPO / name).is_file()})


def copy_repo(destination: Path, raw_cache: bool = True) -> Path:
    """A copy of the repository's files at `destination`, with the demo's raw data (data/raw/ml-100k,
    where a run has fetched it) when `raw_cache`: not the rest of data/raw, which in a working copy
    may hold gigabytes of other datasets."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in repo_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    raw = REPO / "data" / "raw" / DEMO_DATASET
    if raw_cache and raw.is_dir():
        shutil.copytree(raw, destination / "data" / "raw" / DEMO_DATASET, symlinks=True, dirs_exist_ok=True)
    return destination


def copy_run(source: Path, destination: Path) -> Path:
    """A completed run, results and Snakemake's records included, with modification times kept."""
    shutil.copytree(source, destination, symlinks=True)
    shutil.rmtree(destination / ".snakemake" / "locks", ignore_errors=True)
    return destination


# The tables' bootstrap intervals in the tests' runs: a tenth of the default resamplings, which
# otherwise take half of each aggregate job (tests/test_significance.py checks the interval itself).
BOOTSTRAP_SAMPLES = 1000


def config_for_tests(seeds, epochs: int) -> dict:
    """config.yaml with `seeds`, `epochs` epochs (and as much patience) for every SGD method, fewer
    bootstrap resamplings, on the CPU."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["seeds"] = list(seeds)
    config["compute"]["device"] = "cpu"
    config["compare"] = {"bootstrap": {"samples": BOOTSTRAP_SAMPLES}}
    for method in SGD_METHODS:
        if method in config["hyperparameters"]:
            config["hyperparameters"][method].update(epochs=epochs, patience=epochs)
    return config


def reduced_config(seeds=(0, 1), epochs: int = 2, second_dataset: bool = False) -> dict:
    """config.yaml for the tests (config_for_tests). With `second_dataset`, also a smaller second
    dataset: ML-100K again, with only its 370 users of 50 or more positive ratings (test_rerun.py
    adds it where it tells changes to one dataset from the other)."""
    config = config_for_tests(seeds, epochs)
    if second_dataset:
        config["datasets"][SECOND_DATASET] = second_dataset_config(config)
    return config


def second_dataset_config(config: dict) -> dict:
    second = copy.deepcopy(config["datasets"]["ml-100k"])
    second["preprocess"]["min_uc"] = 50
    return second


def synthetic_config(experiment: str, methods: list[str], shape: dict, epochs: int = 2) -> dict:
    """config_for_tests with one seed, reduced to a dataset `toy` of the synthetic source of
    `shape` (users, items, interactions, seed) and the given methods."""
    config = config_for_tests([0], epochs)
    config.update(experiment=experiment, methods=list(methods))
    preprocess = {"threshold": 3.5, "min_uc": 5, "min_sc": 0, "n_heldout": 100, "seed": 98765, "test_prop": 0.2}
    config["datasets"] = {
        "toy": {"sources": [{"synthetic": dict(shape), "format": "synthetic"}], "preprocess": preprocess}
    }
    return config


def dry_run_in(folder: Path, config: dict, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`snakemake -n` of the repository's Snakefile with `config`, in `folder` (no copy of the repository)."""
    configfile = folder / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), "--directory", str(folder)]
    command += ["-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


# The aggregate rule's outputs, by name (workflow_scripts/aggregate.py run by hand).
AGGREGATE_OUTPUTS = (
    "summary_csv",
    "summary_md",
    "summary_tex",
    "comparison_csv",
    "comparison_md",
    "comparison_tex",
    "significance_csv",
)


def output_args(names, folder: Path) -> list[str]:
    """A script's --output arguments: each name to a file of that name in `folder`."""
    return [arg for name in names for arg in ("--output", f"{name}={folder / name}")]


def write_config(workdir: Path, config: dict) -> None:
    (workdir / TEST_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def read_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / TEST_CONFIG).read_text())


def snakemake(
    workdir: Path,
    *args: str,
    cores: int = 4,
    env: dict | None = None,
    timeout_s: float = SNAKEMAKE_TIMEOUT_S,
    check: bool = True,
    configfile: str | None = TEST_CONFIG,
) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` with the test config; raise with its output when it fails.

    Four cores on the two of CI: four 1-thread jobs at a time, since most of a job on this small
    data is starting Python. A job's threads (and so its results) do not depend on `cores`."""
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    command += [f"--configfile={configfile}"] if configfile else []
    command += list(args)
    try:
        done = subprocess.run(
            command, cwd=workdir, env=env or snakemake_env(), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"snakemake {' '.join(args)} did not finish within {timeout_s} s\n{_text(error.stdout)}\n{_text(error.stderr)}"
        ) from None
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def snakemake_env() -> dict:
    """The environment of the test process, with this interpreter's bin folder first on PATH
    and no GPU visible, so that every run is on the CPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


@dataclass(frozen=True, order=True)
class Job:
    rule: str
    wildcards: tuple[tuple[str, str], ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.rule}[{', '.join(f'{k}={v}' for k, v in self.wildcards)}]"


def job(rule: str, **wildcards) -> Job:
    return Job(rule, tuple(sorted((k, str(v)) for k, v in wildcards.items())))


_RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def dry_run_blocks(output: str) -> list[tuple[str, dict[str, str]]]:
    """The job blocks of snakemake's dry-run output: (rule, {"output": ..., "log": ..., ...})."""
    blocks: list[tuple[str, dict[str, str]]] = []
    current: tuple[str, dict[str, str]] | None = None
    for line in output.splitlines():
        match = _RULE_LINE.match(line)
        if match:
            current = (match.group(1), {})
            blocks.append(current)
        elif current is not None and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(":")
            current[1][key] = value.strip()
        else:
            current = None
    return blocks


def planned_jobs(workdir: Path, *args: str, configfile: str | None = TEST_CONFIG) -> dict[Job, str]:
    """The jobs `snakemake --dry-run` would run, each with Snakemake's reason for it."""
    return jobs_in(snakemake(workdir, "--dry-run", FULL_JOB_BLOCKS, *args, configfile=configfile).stdout)


def ran_jobs(workdir: Path, *args: str) -> dict[Job, str]:
    """Run snakemake; the jobs it ran, each with Snakemake's reason for it (its block per job, as a
    dry run prints it, comes before the job runs)."""
    done = snakemake(workdir, FULL_JOB_BLOCKS, *args)
    return jobs_in(done.stdout + "\n" + done.stderr)  # a run logs to stderr


def jobs_in(output: str) -> dict[Job, str]:
    jobs: dict[Job, str] = {}
    for rule, fields in dry_run_blocks(output):
        if rule == "all":
            continue
        wildcards = {}
        if fields.get("wildcards"):
            for pair in fields["wildcards"].split(", "):
                key, _, value = pair.partition("=")
                wildcards[key] = value
        jobs[job(rule, **wildcards)] = fields.get("reason", "")
    return jobs


def run_jobs(config: dict, datasets=None, methods=None, seeds=None) -> set[Job]:
    """The train and evaluate jobs of the given datasets, methods and seeds (default: all of them);
    a seed-independent method's one run (tests/test_seed_independence.py) only where `seeds` is
    left out."""
    jobs = set()
    for dataset in datasets or config["datasets"]:
        for method in methods or config["methods"]:
            runs = plan.run_seeds(config, dataset, method)
            for seed in runs if seeds is None or runs == [None] else seeds:
                if seed is None and seeds is not None:
                    continue
                jobs.add(job("train", dataset=dataset, method=method, run=plan.run_folder(seed)))
                jobs.add(job("evaluate", dataset=dataset, method=method, run=plan.run_folder(seed)))
    return jobs


def method_named(config: dict, name: str) -> str:
    """The method that a name in `methods:` trains, as the config writes it: a variant's `method`,
    or the name itself."""
    return config.get("variants", {}).get(name, {}).get("method", name)


def report_jobs(config: dict, datasets=None, weight_landscape: bool = True) -> set[Job]:
    """The tables and figures of the given datasets, and resources.csv: with a POSIT run (`posit`, or a variant of
    it), also the adversary's table and figure, which read every run's metrics, and with
    `weight_landscape` the weight landscape, which reads only the POSIT runs' items.npz."""
    weighted = any(method_named(config, name) == "posit" for name in config["methods"])
    rules = ["aggregate", "plot"] + (["plot_adversary"] if weighted else [])
    rules += ["plot_weight_landscape"] if weight_landscape and weighted else []
    # resources.csv reads every job's benchmark record: it follows any job that reruns
    return {job(rule, dataset=d) for d in datasets or config["datasets"] for rule in rules} | {job("resources_table")}


def bases(config: dict, name: str) -> set[str]:
    """The runs that `name` (a rerank or post, or a variant of one) takes as its base on some
    dataset: on each, the `base` written last of the method's hyperparameters, the dataset's
    overrides of the method, the variant's settings, and the dataset's overrides of the variant."""
    method = method_named(config, name)
    found = set()
    for dataset in config["datasets"]:
        overrides = (config.get("overrides") or {}).get(dataset, {})
        settings = [config["hyperparameters"].get(method, {}), overrides.get(method, {})]
        if name != method:
            settings += [config["variants"][name], overrides.get(name, {})]
        given = [written["base"] for written in settings if "base" in written]
        found.update(given[-1:])
    return found


def dependents(config: dict, method: str) -> list[str]:
    """`method` and the names in `methods:` whose training reads its model (a rerank or post whose
    base it is), on any dataset."""
    reading = [
        name
        for name in config["methods"]
        if method_named(config, name) in ON_BASE_METHODS and method in bases(config, name)
    ]
    return [method, *reading]


def output_times(workdir: Path, pattern: str = "results/**/*") -> dict[str, int]:
    """Modification times (ns) of the files under results/, to see which ones a run rewrote."""
    return {str(path.relative_to(workdir)): path.stat().st_mtime_ns for path in workdir.glob(pattern) if path.is_file()}


def kill_group(process: subprocess.Popen, grace_s: float = 2.0, first_signal=signal.SIGTERM) -> None:
    """`first_signal` (SIGTERM) to the process group, then SIGKILL to whatever is left after
    `grace_s`, as a scheduler does; with SIGKILL first, as when the machine goes away."""
    try:
        os.killpg(process.pid, first_signal)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


# -- fixtures (imported by conftest.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def completed_demo(tmp_path_factory) -> Path:
    """One complete run of the reduced demo, shared read-only by the tests that need one.

    Under pytest-xdist (`./workflow.sh test` runs two workers) the first worker to need it makes
    it in the session's shared temporary folder, under a file lock, and the others wait for it.
    While working on these tests, SEMTAIL_TEST_COMPLETED_DEMO=PATH reuses a run made earlier
    (a copy of the repository with the reduced config, run to the end); CI never sets it."""
    reuse = os.environ.get("SEMTAIL_TEST_COMPLETED_DEMO")
    if reuse:
        assert planned_jobs(Path(reuse)) == {}, f"{reuse} is not a completed run"
        return Path(reuse)
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...; unset in a run without workers
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    workdir = shared / "completed-demo" / "repo"
    with open(shared / "completed-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "completed-demo" / "done"
        if not done.exists():
            shutil.rmtree(workdir.parent, ignore_errors=True)
            copy_repo(workdir)
            write_config(workdir, reduced_config())
            started = time.monotonic()
            snakemake(workdir)
            print(f"\ncompleted demo run: {time.monotonic() - started:.0f} s in {workdir}")
            done.touch()
    return workdir


SYNTHETIC_RUN = "synthetic-run"  # its experiment name
# Its methods, each with the run folder it writes: mostpop gives the same result for every seed
# and runs once.
SYNTHETIC_RUN_FOLDERS = {"mostpop": "seed-independent", "ease": "seed0", "rerank": "seed0", "posit": "seed0"}
# On the one worker of this group, the session's synthetic run is made once (tests that use it
# carry the mark).
SYNTHETIC_RUN_GROUP = pytest.mark.xdist_group("synthetic-run")


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the repository run to the end on a synthetic dataset `toy` (600 users, 150 items)
    with `model_files: temporary`, as configs/paper.yaml runs: mostpop, ease, rerank on ease, and
    POSIT, one seed. Shared read-only (test_resource_check, test_temporary_model_files): a test
    that changes it works in a copy (copy_run). Returns the folder and the config."""
    workdir = copy_repo(tmp_path_factory.mktemp("synthetic-run") / "repo", raw_cache=False)
    shape = {"users": 600, "items": 150, "interactions": 12_000, "seed": 4}
    config = synthetic_config(SYNTHETIC_RUN, list(SYNTHETIC_RUN_FOLDERS), shape) | {"model_files": "temporary"}
    write_config(workdir, config)
    snakemake(workdir)
    return workdir, config


@pytest.fixture
def demo_copy(completed_demo, tmp_path) -> Path:
    """A private copy of the completed demo run, to change and run again."""
    return copy_run(completed_demo, tmp_path / "run")
