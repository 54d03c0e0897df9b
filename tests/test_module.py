"""The workflow used as a Snakemake module of another workflow, from another folder: it plans the
demo, and its jobs run the module's own scripts and semtail package, not those of another checkout
installed in the environment (docs/running.md, "As a module")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from semtail import plan
from semtail.provenance import code_version
from synthetic_data import DELIMITED_SOURCE, synthetic_for_format, write_delimited
from workflow_runs import REPO, copy_repo, dry_run_blocks, snakemake_env

PARENT_SNAKEFILE = """\
configfile: "{configfile}"


module semtail:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from semtail as semtail_*
"""


def parent_workflow(folder: Path, configfile: Path, module_snakefile: Path = REPO / "Snakefile") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(PARENT_SNAKEFILE.format(configfile=configfile, snakefile=module_snakefile))
    return folder


def download_code_version(checkout: Path) -> str:
    """semtail.provenance's code version of the download stage, computed on `checkout`'s files."""
    done = subprocess.run(
        [sys.executable, "-c", "from semtail.provenance import code_version; print(code_version('download'))"],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout / "workflow_scripts")},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def run_snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=folder,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_parent_workflow_plans_the_demo(tmp_path):
    folder = parent_workflow(tmp_path / "parent", REPO / "config.yaml")
    done = run_snakemake(folder, "--dry-run")
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    runs = sum(len(plan.run_seeds(demo, "ml-100k", name)) for name in demo["methods"])
    jobs = Counter(rule for rule, _ in dry_run_blocks(done.stdout))
    assert jobs == {
        "semtail_download": 1,
        "semtail_preprocess": 1,
        "semtail_train": runs,
        "semtail_evaluate": runs,
        "semtail_aggregate": 1,
        "semtail_plot": 1,
        "semtail_plot_weight_landscape": 1,
        "semtail_plot_adversary": 1,
        "semtail_resources_table": 1,
        "semtail_all": 1,
    }
    blocks = dict(dry_run_blocks(done.stdout))
    assert blocks["semtail_aggregate"]["output"].startswith("results/ml-100k/summary.csv")  # in the parent's folder


def test_a_parent_workflows_jobs_run_the_modules_code(tmp_path):
    """Download and preprocess a small delimited file through a module that is a copy of this
    checkout with other download code: the jobs' scripts import the copy's semtail, though the
    environment may have this (or another) checkout installed (the code version that the download
    job records says so)."""
    module = copy_repo(tmp_path / "module", raw_cache=False)
    sources = module / "workflow_scripts/semtail/datasets/sources.py"
    sources.write_text(sources.read_text() + "\nMODULE_COPY = True\n")
    module_version = download_code_version(module)
    assert module_version != code_version("download")
    csv = write_delimited(synthetic_for_format("delimited", seed=31, n_users=120), tmp_path / "shop.csv")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {
        "shop": {
            "sources": [{**DELIMITED_SOURCE, "path": str(csv)}],
            "preprocess": {
                "threshold": 3.5,
                "min_uc": 5,
                "min_sc": 0,
                "n_heldout": 10,
                "seed": 98765,
                "test_prop": 0.2,
            },
        }
    }
    config["evaluation"]["coverage_block_size"] = 10
    configfile = tmp_path / "shop.yaml"
    configfile.write_text(yaml.safe_dump(config))
    folder = parent_workflow(tmp_path / "parent", configfile, module / "Snakefile")
    stats_file = f"{plan.processed_dir(config, 'shop')}/stats.json"
    run_snakemake(folder, stats_file)
    provenance = json.loads((folder / "data/raw/shop/provenance.json").read_text())
    assert provenance["code_version"] == module_version
    stats = json.loads((folder / stats_file).read_text())
    assert stats["raw"]["format"] == "delimited" and stats["users_per_part"]["test"] == 10
