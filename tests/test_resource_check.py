"""resources.csv (semtail/resource_check.py): each job's measured peak and wall time against what it
declared; and the runtime a job declares follows the device it will use (semtail/job_resources.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from semtail import job_resources, plan
from semtail.resource_check import (
    COLUMNS,
    ResourceRecordError,
    ResourcesExceeded,
    check_within,
    resource_rows,
    row_of,
)
from workflow_runs import (
    FULL_JOB_BLOCKS,
    SYNTHETIC_RUN,
    SYNTHETIC_RUN_FOLDERS,
    SYNTHETIC_RUN_GROUP,
    copy_repo,
    copy_run,
    dry_run_blocks,
    snakemake,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]


def record(path: Path, *, s, max_rss, mem_mb, runtime, rule="evaluate", **wildcards) -> Path:
    """A benchmark record as Snakemake writes it with --benchmark-extended to a .jsonl file."""
    path.write_text(
        json.dumps(
            {
                "s": s,
                "h:m:s": "0:00:00",
                "max_rss": max_rss,
                "max_vms": 1.0,
                "rule_name": rule,
                "wildcards": {"dataset": "toy", "method": "ease", "seed": "0", **wildcards},
                "resources": {"_cores": 1, "tmpdir": "/tmp", "mem_mb": mem_mb, "runtime": runtime},
                "threads": 1,
            }
        )
        + "\n"
    )
    return path


def test_within_exceeded_and_oversized(tmp_path):
    fits = row_of(record(tmp_path / "a.jsonl", s=90.0, max_rss=3000.0, mem_mb=4000, runtime=12))
    assert (fits.within, fits.note) == (True, "")
    assert fits.wall_min == 1.5 and fits.max_rss_mb == 3000.0 and fits.declared_mem_mb == 4000
    heavy = row_of(record(tmp_path / "b.jsonl", s=60.0, max_rss=6879.0, mem_mb=6619, runtime=11, method="rerank"))
    assert not heavy.within and "peak memory 6879.0 MiB exceeds the declared 6619 MiB" in heavy.note
    slow = row_of(record(tmp_path / "c.jsonl", s=13.8 * 60, max_rss=100.0, mem_mb=4000, runtime=12, rule="train"))
    assert not slow.within and "wall time 13.8 min exceeds the declared 12 min" in slow.note
    # 2x the measurement plus the floor (2048 MiB, 15 min): 2 * 3000 + 2048 = 8048 is still fine, 8049 is not.
    edge = row_of(record(tmp_path / "d.jsonl", s=600.0, max_rss=3000.0, mem_mb=8048, runtime=35))
    assert edge.within and edge.note == ""
    over = row_of(record(tmp_path / "e.jsonl", s=600.0, max_rss=3000.0, mem_mb=8049, runtime=36))
    assert over.within and "peak memory oversized: declared 8049 MiB, 2.7x" in over.note
    assert "wall time oversized: declared 36 min, 3.6x" in over.note
    with pytest.raises(ResourcesExceeded) as raised:
        check_within([fits, heavy, slow, edge])
    message = str(raised.value)
    assert "2 of 4 jobs used more than they declared" in message
    assert "evaluate dataset=toy method=rerank seed=0: peak memory 6879.0 MiB exceeds the declared 6619 MiB" in message
    assert "train dataset=toy method=ease seed=0: peak memory oversized" in message
    assert "wall time 13.8 min exceeds the declared 12 min" in message
    check_within([fits, edge, over])


def test_unsampled_memory_is_judged_by_wall_time(tmp_path):
    quick = row_of(record(tmp_path / "q.jsonl", s=0.3, max_rss="NA", mem_mb=2000, runtime=10))
    assert quick.within and quick.max_rss_mb is None and "peak memory not sampled" in quick.note


def test_records_without_declarations_or_unreadable_are_named(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"s": 1.0, "max_rss": 10.0}) + "\n")
    with pytest.raises(ResourceRecordError, match="plain.jsonl: the record has no rule_name, wildcards, resources"):
        row_of(plain)
    with pytest.raises(ResourceRecordError, match="missing.jsonl: no benchmark record"):
        resource_rows([tmp_path / "missing.jsonl"])


@pytest.mark.parametrize(
    ("gpus", "cluster", "limit", "visible", "expected"),
    [
        (0, True, None, 4, False),  # --set-resources train:gpu=0, or compute.device: cpu
        (1, True, None, 0, True),  # a cluster node is given its GPU
        (1, False, 2, 0, True),  # profiles/default counted two GPUs
        (1, False, 0, 2, False),  # --resources gpu=0
        (1, False, None, 0, False),  # no limit, no GPU on this machine: device auto takes the CPU
        (1, False, None, 1, True),
    ],
)
def test_runs_on_gpu(gpus, cluster, limit, visible, expected):
    assert job_resources.runs_on_gpu(gpus, cluster, limit, visible) is expected


def paper_config() -> dict:
    return yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())


def test_cpu_runtime_of_an_sgd_job_is_hours():
    """ML-20M: 50 epochs of 114 steps; at CPU bandwidth a step moves 2 * 1024 * 73 * 20108 * 4 + 6 D
    bytes (D = 4 * 20108^2), so the job's estimate is hours, not the GPU's minutes."""
    config = paper_config()
    cpu = job_resources.resources(config, "train", "ml-20m", method="ease", stats_file="/nonexistent", on_gpu=False)
    gpu = job_resources.resources(config, "train", "ml-20m", method="ease", stats_file="/nonexistent", on_gpu=True)
    dense = 4.0 * 20108**2
    step = 2 * 1024 * (10_000_000 / 136_677) * 20108 * 4 + 6 * dense
    steps = -(-(136_677 - 20_000) // 1024)
    assert cpu["runtime"] >= 10 + 2 * 50 * steps * step / job_resources.CPU_BYTES_PER_S / 60
    assert cpu["runtime"] > 4 * gpu["runtime"]
    # On the CPU the best epoch's U waits in a file, not in the host's memory: one D less.
    assert cpu["mem_mb"] == -(-(gpu["mem_mb"] * 2**20 - dense) // 2**20)


def planned_resources(output: str) -> dict[tuple[str, str], dict[str, str]]:
    planned = {}
    for rule, fields in dry_run_blocks(output):
        if rule in ("train", "evaluate") and "resources" in fields:
            values = dict(pair.split("=", 1) for pair in fields["resources"].split(", "))
            planned[(rule, fields["wildcards"])] = values
    return planned


def test_set_resources_gpu_0_declares_cpu_runtimes(tmp_path):
    """docs/running.md's way to keep the GPUs out, on a machine whose run has a gpu limit: the train
    and evaluate jobs then declare what the CPU needs."""
    workdir = copy_repo(tmp_path / "repo", raw_cache=False)
    config = paper_config()
    config["datasets"] = {"ml-20m": config["datasets"]["ml-20m"]}
    config["overrides"] = {}
    config["seeds"] = [0]
    write_config(workdir, config)
    targets = ("results/ml-20m/ease/seed0/model.pt", "results/ml-20m/ease/seed0/metrics.json")
    on_gpu = planned_resources(
        snakemake(workdir, *targets, "--dry-run", FULL_JOB_BLOCKS, "--resources", "gpu=1").stdout
    )
    on_cpu = planned_resources(
        snakemake(
            workdir,
            *targets,
            "--dry-run",
            FULL_JOB_BLOCKS,
            "--resources",
            "gpu=1",
            "--set-resources",
            "train:gpu=0",
            "evaluate:gpu=0",
        ).stdout
    )
    key = ("train", "dataset=ml-20m, method=ease, run=seed0")
    expected = {
        flag: job_resources.resources(config, "train", "ml-20m", method="ease", stats_file="/nonexistent", on_gpu=flag)[
            "runtime"
        ]
        for flag in (True, False)
    }
    assert int(on_gpu[key]["runtime"]) == expected[True] and on_gpu[key]["gpu"] == "1"
    assert int(on_cpu[key]["runtime"]) == expected[False] and on_cpu[key]["gpu"] == "0"
    assert expected[False] > 4 * expected[True]


@pytest.mark.slow
@SYNTHETIC_RUN_GROUP
def test_resources_csv_of_a_small_synthetic_run(synthetic_run, tmp_path):
    """A synthetic dataset end to end: resources.csv has a row per job, its values those of the
    benchmark files, all within; a job that declares 5 MiB fails the check by name."""
    completed, config = synthetic_run
    table = completed / "results" / SYNTHETIC_RUN / "resources.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    jobs = {row["job"] for row in rows}
    runs = {
        f"{rule} dataset=toy method={m} run={run}"
        for rule in ("train", "evaluate")
        for m, run in SYNTHETIC_RUN_FOLDERS.items()
    }
    split = f"split={plan.split_key(config, 'toy')}"
    reports = {f"{rule} dataset=toy" for rule in ("aggregate", "plot", "plot_adversary", "plot_weight_landscape")}
    assert jobs == {"download dataset=toy", f"preprocess dataset=toy {split}"} | reports | runs
    assert all(row["within"] == "true" for row in rows), rows
    benchmark = completed / "logs" / SYNTHETIC_RUN / "benchmarks" / "evaluate" / "toy" / "rerank" / "seed0.jsonl"
    measured = json.loads(benchmark.read_text().splitlines()[-1])
    row = next(r for r in rows if r["job"] == "evaluate dataset=toy method=rerank run=seed0")
    assert math.isclose(float(row["wall_min"]), measured["s"] / 60, abs_tol=0.005)
    assert row["declared_mem_mb"] == str(measured["resources"]["mem_mb"])
    assert row["declared_runtime_min"] == str(measured["resources"]["runtime"])

    workdir = copy_run(completed, tmp_path / "run")
    failed = snakemake(workdir, "--set-resources", "aggregate:mem_mb=5", "--forcerun", "aggregate", check=False)
    assert failed.returncode != 0
    log = (workdir / "logs" / SYNTHETIC_RUN / "resources_table.log").read_text()
    assert "aggregate dataset=toy: peak memory" in log
    assert "exceeds the declared 5 MiB" in log
    assert not (workdir / "results" / SYNTHETIC_RUN / "resources.csv").exists()


def test_download_of_a_synthetic_source_is_sized_by_its_positives():
    config = yaml.safe_load((REPO / "configs" / "rehearsal.yaml").read_text())
    asked = job_resources.resources(config, "download", "ml-20m-shape", stats_file="/nonexistent")
    assert asked["mem_mb"] == -(-(2**30 + 100 * 9_990_682) // 2**20)  # 1,977 MiB; 694 measured
    assert job_resources.resources(paper_config(), "download", "ml-20m", stats_file="/nonexistent")["mem_mb"] == 1024


def test_benchmark_files_name_every_job_of_the_default_targets():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    files = plan.benchmark_files(config)
    seed_independent = [m for m in config["methods"] if m in ("mostpop", "ease_closed")]  # one run each
    runs = (len(config["methods"]) - len(seed_independent)) * len(config["seeds"]) + len(seed_independent)
    assert len(files) == len(set(files)) == 2 + 2 * runs + 4  # data, runs, tables and the four figures' jobs
    assert f"logs/benchmarks/preprocess/ml-100k/{plan.split_key(config, 'ml-100k')}.jsonl" in files
    assert "logs/benchmarks/train/ml-100k/mostpop/seed-independent.jsonl" in files
    assert "logs/benchmarks/train/ml-100k/posit/seed2.jsonl" in files
    assert "logs/benchmarks/plot_adversary/ml-100k.jsonl" in files
    rehearsal = yaml.safe_load((REPO / "configs" / "rehearsal.yaml").read_text())
    assert "logs/rehearsal/benchmarks/evaluate/ml-20m-shape/rerank/seed0.jsonl" in plan.benchmark_files(rehearsal)
    assert "logs/benchmarks/download/ml-20m-shape.jsonl" in plan.benchmark_files(rehearsal)


def test_evaluation_memory_follows_each_method_ranking_cost():
    """ML-20M, batch 4096 (benchmarks/evaluate_memory.py on the CPU, 10,000 test users): EASE's
    evaluation peaked at 4,540 MiB, rerank's at 7,044 (its two sorts), above the 6,628 that every
    method was asked for before. Each request covers its peak, and stays within 2x it plus 2 GiB."""
    config = paper_config()

    def asked(method):
        return job_resources.resources(config, "evaluate", "ml-20m", method=method, stats_file="/nonexistent")["mem_mb"]

    dense, entries, sparse = 4 * 20108**2, 4096 * 20108, 12 * 10_000_000
    assert asked("ease") == -(-(2**31 + 2 * dense + 16 * entries + 2 * sparse) // 2**20)
    assert asked("rerank") == -(-(2**31 + 2 * dense + (16 + 36) * entries + 2 * sparse) // 2**20)
    for method, peak in (("ease", 4540), ("rerank", 7044)):
        assert peak < asked(method) <= 2 * peak + 2048
    assert asked("mostpop") == -(-(2**31 + (16 + 4) * entries + 2 * sparse) // 2**20)  # no item x item matrix
    cpu = job_resources.resources(
        config, "evaluate", "ml-20m", method="rerank", stats_file="/nonexistent", on_gpu=False
    )
    ease_cpu = job_resources.resources(
        config, "evaluate", "ml-20m", method="ease", stats_file="/nonexistent", on_gpu=False
    )
    assert cpu["runtime"] > ease_cpu["runtime"]  # the sorts


def test_download_of_a_synthetic_source_takes_the_time_of_generating_it():
    """35 s measured for ML-20M's shape on the idle 2-core machine (1,177 s under a load of 20-30):
    10 minutes of start-up plus twice 1.2e-5 s a positive, where a fetched dataset gets 4 hours."""
    config = yaml.safe_load((REPO / "configs" / "rehearsal.yaml").read_text())
    asked = job_resources.resources(config, "download", "ml-20m-shape", stats_file="/nonexistent")["runtime"]
    assert asked == -(-(10 + 2 * 1.2e-5 * 9_990_682 / 60) // 1) == 14
    assert job_resources.resources(paper_config(), "download", "ml-20m", stats_file="/nonexistent")["runtime"] == 240
