"""The workflow used as a Snakemake module of another workflow, from another folder: it plans the
demo, and its jobs run this checkout's scripts and semtail package (docs/running.md, "As a module")."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from semtail.provenance import code_version
from synthetic_data import DELIMITED_SOURCE, synthetic_for_format, write_delimited
from workflow_runs import REPO, dry_run_blocks, snakemake_env

PARENT_SNAKEFILE = """\
configfile: "{configfile}"


module semtail:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from semtail as semtail_*
"""


def parent_workflow(folder: Path, configfile: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(PARENT_SNAKEFILE.format(configfile=configfile, snakefile=REPO / "Snakefile"))
    return folder


def run_snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=folder, env=snakemake_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_a_parent_workflow_plans_the_demo(tmp_path):
    folder = parent_workflow(tmp_path / "parent", REPO / "config.yaml")
    done = run_snakemake(folder, "--dry-run")
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    runs = len(demo["methods"]) * len(demo["seeds"])
    jobs = Counter(rule for rule, _ in dry_run_blocks(done.stdout))
    assert jobs == {
        "semtail_download": 1, "semtail_preprocess": 1, "semtail_train": runs, "semtail_evaluate": runs,
        "semtail_aggregate": 1, "semtail_plot": 1, "semtail_plot_weight_landscape": 1, "semtail_plot_adversary": 1,
        "semtail_all": 1,
    }  # fmt: skip
    blocks = dict(dry_run_blocks(done.stdout))
    assert blocks["semtail_aggregate"]["output"].startswith("results/ml-100k/summary.csv")  # in the parent's folder


def test_a_parent_workflows_jobs_run_this_checkouts_code(tmp_path):
    """Download and preprocess a small delimited file through the module: the jobs' scripts import
    this checkout's semtail (the code version that the download job records says so)."""
    csv = write_delimited(synthetic_for_format("delimited", seed=31, n_users=120), tmp_path / "shop.csv")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {
        "shop": {
            "sources": [{**DELIMITED_SOURCE, "path": str(csv)}],
            "preprocess": {"threshold": 3.5, "min_uc": 5, "min_sc": 0, "n_heldout": 10, "seed": 98765, "test_prop": 0.2},
        }
    }
    config["evaluation"]["coverage_block_size"] = 10
    configfile = tmp_path / "shop.yaml"
    configfile.write_text(yaml.safe_dump(config))
    folder = parent_workflow(tmp_path / "parent", configfile)
    run_snakemake(folder, "data/processed/shop/stats.json")
    provenance = json.loads((folder / "data/raw/shop/provenance.json").read_text())
    assert provenance["code_version"] == code_version("download")
    stats = json.loads((folder / "data/processed/shop/stats.json").read_text())
    assert stats["raw"]["format"] == "delimited" and stats["users_per_part"]["test"] == 10
