"""The config: the schema catches typos and wrong types by name; planning resolves what each job gets."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from semtail import workflow as plan

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "schemas/config.schema.yaml")


def load(name):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture
def demo():
    return load("config.yaml")


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_shipped_configs_are_valid(name):
    config = load(name)
    validate(config, SCHEMA)
    plan.check_config(config)


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda c: c.update(seed=[0]), "seed"),
        (lambda c: c["hyperparameters"]["posit"].update(lrr=0.1), "lrr"),
        (lambda c: c["hyperparameters"]["posit"].update(lr="fast"), "fast"),
        (lambda c: c["datasets"]["ml-100k"]["preprocess"].update(min_uc=-1), "-1"),
        (lambda c: c["datasets"]["ml-100k"]["preprocess"].update(seed=2**32), "4294967296 is greater than the maximum"),
        (
            lambda c: c["datasets"]["ml-100k"].update(expected={"users": 9, "interactions_relative_tolerance": 0.1}),
            "'interactions' is a dependency of 'interactions_relative_tolerance'",
        ),
        (
            lambda c: c["datasets"]["ml-100k"].update(expected={"interactions": 9, "interactions_relative_tolerance": 1.5}),
            "1.5",
        ),
        (lambda c: c["datasets"]["ml-100k"]["sources"][0].update(md5="xyz"), "xyz"),
        (lambda c: c["compute"].update(device="tpu"), "tpu"),
        (lambda c: c.update(methods=["posit", "slim"]), "slim"),
    ],
)
def test_schema_rejects_and_names_the_bad_key_or_value(demo, mutate, named):
    config = copy.deepcopy(demo)
    mutate(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, SCHEMA)
    assert named in str(error.value)


def test_schema_takes_an_approximate_interaction_count(demo):
    config = copy.deepcopy(demo)
    config["datasets"]["ml-100k"]["expected"] = {"interactions": 55000, "interactions_relative_tolerance": 0.01}
    validate(config, SCHEMA)
    assert config["datasets"]["ml-100k"]["expected"] == {"interactions": 55000, "interactions_relative_tolerance": 0.01}
    paper = load("configs/paper.yaml")["datasets"]
    assert {name: paper[name]["expected"].get("interactions_relative_tolerance") for name in paper} == {
        "ml-20m": 0.005, "netflix": 0.001, "msd": None
    }


def test_cross_key_checks_name_the_key(demo):
    config = copy.deepcopy(demo)
    config["overrides"] = {"ml-100k": {"posit": {"lrr": 1.0}}}
    with pytest.raises(plan.ConfigError, match=r"overrides\.ml-100k\.posit: \['lrr'\]"):
        plan.check_config(config)
    config["overrides"] = {"ml-1m": {"posit": {"lr": 1.0}}}
    with pytest.raises(plan.ConfigError, match="'ml-1m' is not a configured dataset"):
        plan.check_config(config)
    config = copy.deepcopy(demo)
    config["methods"] = ["rerank"]
    with pytest.raises(plan.ConfigError, match="rerank.base: 'ease' must also be in methods"):
        plan.check_config(config)


def test_overrides_change_one_method_on_one_dataset(demo):
    config = copy.deepcopy(demo)
    config["datasets"]["other"] = config["datasets"]["ml-100k"]
    config["overrides"] = {"other": {"posit": {"lr": 0.5, "adversary": "2mlp50"}}}
    posit_other = plan.resolve_hyperparameters(config, "other", "posit")
    assert posit_other["lr"] == 0.5 and posit_other["adversary"] == "2mlp50"
    assert posit_other["nstd"] == demo["hyperparameters"]["posit"]["nstd"]
    assert plan.resolve_hyperparameters(config, "ml-100k", "posit") == demo["hyperparameters"]["posit"]
    assert plan.resolve_hyperparameters(config, "other", "ease") == demo["hyperparameters"]["ease"]
    posit_other["lr"] = 99  # the caller's copy: the config must not change
    assert config["overrides"]["other"]["posit"]["lr"] == 0.5


def test_targets_cover_every_dataset_table_and_figure(demo):
    targets = plan.final_targets(demo)
    assert "results/ml-100k/summary.csv" in targets
    assert "results/ml-100k/paper_comparison.md" in targets
    assert "results/ml-100k/figures/coverage_at_k.pdf" in targets
    assert "results/ml-100k/figures/weight_landscape.png" in targets
    without_posit = dict(demo, methods=["mostpop", "ease"])
    assert not any("weight_landscape" in t for t in plan.final_targets(without_posit))


def test_run_files_list_every_method_and_seed(demo):
    files = plan.run_files(demo, "ml-100k")
    assert len(files["metrics"]) == len(demo["methods"]) * len(demo["seeds"])
    assert files["metrics"][0] == f"results/ml-100k/{demo['methods'][0]}/seed{demo['seeds'][0]}/metrics.json"


def test_rerank_trains_on_its_base_model_of_the_same_seed(demo):
    inputs = plan.train_inputs(demo, "ml-100k", "rerank", 2)
    assert inputs["base_model"] == "results/ml-100k/ease/seed2/model.pt"
    assert "base_model" not in plan.train_inputs(demo, "ml-100k", "posit", 2)


def test_cpu_device_requests_no_gpu(demo):
    assert plan.gpus_per_job(demo) == 1
    assert plan.gpus_per_job(dict(demo, compute={"device": "cpu", "gpus_per_job": 1})) == 0


def test_snakemake_fails_at_once_on_a_typo(tmp_path, demo):
    config = copy.deepcopy(demo)
    config["hyperparameters"]["ease"]["epochs_"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).parent / "snakemake"
    done = subprocess.run(
        [str(snakemake), "-n", "--configfile", str(bad), "--directory", str(tmp_path), "-s", str(ROOT / "Snakefile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "epochs_" in done.stdout + done.stderr
