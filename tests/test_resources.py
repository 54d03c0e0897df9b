"""semtail.job_resources.resources: what each job asks the scheduler for, at the paper's dataset sizes.

The memory a job needs is at least the bytes of the arrays it must hold at once, computed here from
the published sizes; the requests must cover them without asking for absurd amounts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from semtail import job_resources, plan, registry

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
MIB = 2**20

# Published sizes (users, items, interactions after preprocessing) and batch sizes of the paper.
PAPER = {
    "ml-20m": (136_677, 20_108, 10_000_054, 1024, 10_000),
    "netflix": (463_435, 17_769, 56_880_037, 1024, 40_000),
    "msd": (571_355, 41_140, 33_633_450, 8192, 50_000),
}
SGD = tuple(name for name, method in registry.methods().items() if method.training == "sgd")


@pytest.fixture
def paper():
    """configs/paper.yaml with the demo's method list and hyperparameters, at the paper's batch sizes."""
    config = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"] = demo["methods"]
    config["hyperparameters"] = copy.deepcopy(demo["hyperparameters"])
    config["overrides"] = {name: {m: {"batch_size": PAPER[name][3], "epochs": 50} for m in SGD} for name in PAPER}
    for name, (users, items, interactions, _, heldout) in PAPER.items():
        config["datasets"][name]["expected"] = {"users": users, "items": items, "interactions": interactions}
        config["datasets"][name]["preprocess"]["n_heldout"] = heldout
    return config


def request(config, stage, dataset, method=None, attempt=1, stats_file="/nonexistent/stats.json"):
    return job_resources.resources(config, stage, dataset, attempt, method=method, stats_file=stats_file)


def dense_bytes(items):
    return 4.0 * items * items  # one float32 item x item matrix


@pytest.mark.parametrize("dataset", list(PAPER))
@pytest.mark.parametrize("method", SGD)
def test_sgd_training_memory_covers_u_momentum_best_copy_and_a_gradient_block(paper, dataset, method):
    users, items, interactions, batch, _ = PAPER[dataset]
    asked = request(paper, "train", dataset, method)["mem_mb"] * MIB
    must_hold = 3 * dense_bytes(items) + 2**27 + 2 * batch * items * 4 + interactions * 8
    assert asked >= must_hold
    assert asked <= 2 * must_hold + 4 * GB


@pytest.mark.parametrize("dataset", list(PAPER))
def test_sgd_training_on_the_cpu_asks_for_u_momentum_and_a_gradient_block_only(paper, dataset):
    """On the CPU the best epoch's U is kept in its file, not in memory: U and its momentum, of the
    gradient a block, four of the batch's dense tensors, the sparse data three times, 2 GiB, and
    what POSIT declares: 600 bytes per training user (all but the validation and test users)."""
    users, items, interactions, batch, heldout = PAPER[dataset]
    paper["compute"]["device"] = "cpu"
    asked = request(paper, "train", dataset, "posit")["mem_mb"]
    must_hold = 2 * dense_bytes(items) + 2**27 + 4 * batch * items * 4 + 3 * 12 * interactions + 2 * 2**30
    must_hold += 600 * (users - 2 * heldout)
    assert asked == -(-must_hold // MIB)


def test_msd_numbers_from_the_issue(paper):
    """U for MSD is 41,140^2 float32 = 6.8 GB; with gradient and momentum 20.3 GB."""
    assert dense_bytes(41_140) == pytest.approx(6.77e9, rel=1e-3)
    asked = request(paper, "train", "msd", "posit")["mem_mb"] * MIB
    assert asked >= 3 * 6.77e9
    # Fits a common 64 GB node; the ML datasets fit 16 GB.
    assert asked < 64 * GB
    for dataset in ("ml-20m", "netflix"):
        assert request(paper, "train", dataset, "posit")["mem_mb"] * MIB < 16 * GB


def test_closed_form_ease_holds_float64_gram_and_inverse(paper):
    items = PAPER["msd"][1]
    asked = request(paper, "train", "msd", "ease_closed")["mem_mb"] * MIB
    assert asked >= 2 * 8.0 * items * items  # X^T X + lambda I and its inverse, float64


def test_evaluation_and_light_jobs(paper):
    items = PAPER["msd"][1]
    evaluate = request(paper, "evaluate", "msd")
    assert evaluate["mem_mb"] * MIB >= dense_bytes(items) + 4096 * items * 4
    mostpop = request(paper, "train", "msd", "mostpop")
    assert mostpop["mem_mb"] < request(paper, "train", "msd", "ease")["mem_mb"] / 5
    assert request(paper, "report", "msd")["threads"] == 1
    assert request(paper, "download", "msd")["threads"] == 1


def test_runtime_grows_with_the_dataset_and_stays_within_a_day_on_gpu(paper):
    runtimes = {d: request(paper, "train", d, "posit")["runtime"] for d in PAPER}
    assert runtimes["msd"] > runtimes["ml-20m"]
    assert runtimes["netflix"] > runtimes["ml-20m"]  # same catalog size, 5.7x the interactions
    assert all(30 <= minutes <= 24 * 60 for minutes in runtimes.values()), runtimes


def test_cpu_runs_ask_for_more_time(paper):
    gpu = request(paper, "train", "ml-20m", "posit")["runtime"]
    paper["compute"]["device"] = "cpu"
    cpu = request(paper, "train", "ml-20m", "posit")["runtime"]
    assert cpu > 5 * gpu


def test_more_epochs_take_longer(paper):
    base = request(paper, "train", "ml-20m", "ease")["runtime"]
    paper["overrides"]["ml-20m"]["ease"]["epochs"] = 200
    assert request(paper, "train", "ml-20m", "ease")["runtime"] > 2 * base - 20


def test_retry_doubles_memory_and_time(paper):
    first = request(paper, "train", "netflix", "ipw", attempt=1)
    second = request(paper, "train", "netflix", "ipw", attempt=2)
    assert second["mem_mb"] == pytest.approx(2 * first["mem_mb"], abs=1)
    assert second["runtime"] == pytest.approx(2 * first["runtime"], abs=1)
    assert second["threads"] == first["threads"]


def test_threads_follow_the_catalog_size(paper):
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert request(paper, "train", "ml-20m", "posit")["threads"] > request(demo, "train", "ml-100k", "posit")["threads"]


def test_a_demo_sized_job_gets_one_thread_so_that_two_share_two_cores(tmp_path):
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    stats = tmp_path / "stats.json"
    for items, expected in [(1_415, 1), (4_999, 1), (5_000, 2), (9_999, 2), (20_108, None)]:
        stats.write_text(json.dumps({"users": 943, "items": items, "interactions": 50_000}))
        threads = {
            stage: request(demo, stage, "ml-100k", "posit" if stage == "train" else None, stats_file=stats)["threads"]
            for stage in ("preprocess", "train", "evaluate", "weight_landscape")
        }
        if expected is None:  # the large catalogs of the paper
            assert threads == {"preprocess": 4, "train": 8, "evaluate": 8, "weight_landscape": 4}
        else:
            assert set(threads.values()) == {expected}, (items, threads)


def test_measured_sizes_replace_expected_ones(paper, tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"users": 1000, "items": 40_000, "interactions": 50_000, "train": {"users": 800}}))
    assert job_resources.dataset_size(paper, "ml-20m", stats) == {
        "users": 1000,
        "items": 40_000,
        "interactions": 50_000,
    }
    measured = request(paper, "train", "ml-20m", "ease", stats_file=stats)
    assert measured["mem_mb"] * MIB >= 3 * dense_bytes(40_000)
    assert measured["mem_mb"] > request(paper, "train", "ml-20m", "ease")["mem_mb"]


def test_expected_sizes_before_preprocessing_else_a_guess(paper):
    assert job_resources.dataset_size(paper, "msd", "/nonexistent/stats.json") == {
        "users": 571_355,
        "items": 41_140,
        "interactions": 33_633_450,
    }
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    guess = job_resources.dataset_size(demo, "ml-100k", "/nonexistent/stats.json")
    assert guess["items"] > 0 and guess["users"] > 0


def test_bad_stats_file_is_named(paper, tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"users": 10, "items": "many"}))
    with pytest.raises(plan.ConfigError, match=str(stats)):
        job_resources.dataset_size(paper, "ml-20m", stats)


def test_unknown_stage_and_missing_method(paper):
    with pytest.raises(ValueError, match="'sample'"):
        request(paper, "sample", "ml-20m")
    with pytest.raises(ValueError, match="method"):
        request(paper, "train", "ml-20m")


def test_slurm_placeholders_are_refused_by_name():
    with pytest.raises(plan.ConfigError, match="slurm_partition") as error:
        plan.check_cluster_resources({"slurm_partition": "<set slurm_partition>", "mem_mb": "1000"})
    assert "--default-resources slurm_partition=" in str(error.value)
    plan.check_cluster_resources({"slurm_partition": "gpu", "slurm_account": "proj42"})
    plan.check_cluster_resources({})


def test_causal_and_post_ask_like_the_methods_they_resemble(paper):
    """Causal trains like ease (same loop, a vector more); post copies its base like rerank."""
    for dataset in PAPER:
        assert request(paper, "train", dataset, "causal") == request(paper, "train", dataset, "ease")
        assert request(paper, "train", dataset, "post") == request(paper, "train", dataset, "rerank")
    assert job_resources.training_gpus(paper, "post") == 0 and job_resources.training_gpus(paper, "causal") == 1


def test_a_training_job_is_sized_by_the_hyperparameters_it_trains_with(paper):
    """A search's choice or a candidate's values, when given, size the job as a config that sets them would."""
    before = request(paper, "train", "ml-20m", "ease")
    chosen = {**plan.resolve_hyperparameters(paper, "ml-20m", "ease"), "epochs": 200, "batch_size": 4096}
    given = job_resources.resources(
        paper, "train", "ml-20m", method="ease", stats_file="/nonexistent/stats.json", hyperparameters=chosen
    )
    paper["overrides"]["ml-20m"]["ease"].update(epochs=200, batch_size=4096)
    assert given == request(paper, "train", "ml-20m", "ease")
    assert given["mem_mb"] > before["mem_mb"] and given["runtime"] > before["runtime"]


def test_the_stages_the_rules_size_are_the_resource_model_s():
    rules = "".join(path.read_text() for path in sorted((ROOT / "rules").glob("*.smk")))
    sized = set(re.findall(r'resource\(\s*"\w+",\s*"(\w+)"', rules))
    assert (
        sized
        == set(job_resources.STAGES)
        == {"download", "preprocess", "train", "evaluate", "weight_landscape", "adversary", "report"}
    )
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    with pytest.raises(ValueError, match="no resource model for stage 'tune_candidate'"):
        request(demo, "tune_candidate", "ml-100k")


def test_the_light_stages_ask_for_what_their_arrays_take(tmp_path):
    """20,000 items, 1M interactions, 100 held-out users, ease and posit (item weights) over 3 seeds:
    D = 4 * 20,000^2 = 1.6e9 bytes, the CSR matrix 12 * 1M; 2 GiB for the interpreter."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"], config["seeds"] = ["ease", "posit"], [0, 1, 2]
    config["datasets"]["ml-100k"]["preprocess"]["n_heldout"] = 100
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"users": 2000, "items": 20_000, "interactions": 1_000_000}))
    asked = {
        stage: request(config, stage, "ml-100k", stats_file=stats) for stage in job_resources.STAGES if stage != "train"
    }
    # 2 GiB + 100 bytes for each of the 2M raw rows.
    assert asked["preprocess"] == {"threads": 4, "mem_mb": 2239, "runtime": 11}
    # 2 GiB + the 3 POSIT runs' item weights (float64, from items.npz) + the SVD's 4 copies of X:
    # 2,195,963,648 bytes; no model file is read.
    assert asked["weight_landscape"] == {"threads": 4, "mem_mb": 2095, "runtime": 11}
    # 2 GiB + 8 bytes an item for each of the 3 POSIT runs' metric JSONs: 2,147,963,648 bytes; the
    # 10 minutes of a job's start-up.
    assert asked["adversary"] == {"threads": 1, "mem_mb": 2049, "runtime": 10}
    # 1 GiB + twice the 6 runs' top-100 lists (960,000 bytes) + their item counts (3,840,000 bytes).
    assert asked["report"] == {"threads": 1, "mem_mb": 1030, "runtime": 11}
    assert request(config, "report", "ml-100k", attempt=2, stats_file=stats) == {
        "threads": 1,
        "mem_mb": 2059,
        "runtime": 21,
    }
