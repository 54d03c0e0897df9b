"""Seed-independent methods run once per dataset, and a method on a base refers to its base's model
file instead of copying its matrix: the declarations, the planning, the model file's base
reference, and the tables of a method with one run."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from semtail import job_resources, plan, registry, tables
from semtail.evaluate import Split, evaluate_model_file
from semtail.modelfile import ModelFileError, load_model
from semtail.models.synthetic import training_data
from semtail.train_job import train_and_save, train_model
from workflow_runs import dry_run_in

ROOT = Path(__file__).resolve().parents[1]
PAPER_ITEMS = {"ml-20m": 20108, "netflix": 17769, "msd": 41140}  # configs/paper.yaml's expected sizes


def load(name):
    return yaml.safe_load((ROOT / name).read_text())


# ---- declarations ----


def test_the_declarations_say_which_methods_give_the_same_result_for_every_seed():
    dependent = {name: registry.declaration(name).seed_dependent for name in registry.names()}
    assert dependent == {
        "mostpop": False,
        "ease_closed": False,
        "rerank": False,
        "post": False,
        "ease": True,
        "ipw": True,
        "cvar": True,
        "posit": True,
        "causal": True,
    }
    assert "mostpop (MostPop; training: closed_form; seed-independent;" in registry.describe()
    assert "rerank (Rerank; training: on_base; seed-independent where its base is;" in registry.describe()


CLOSED_FORM = """{
    "training": "closed_form",
    "hyperparameters": {},
    "state": {"S": ["items", "items"]},
    "resources": {"gpu": False},
    "figures": {"label": "X", "colour": "#123456", "marker": "o"},
    SEEDING
}"""


@pytest.mark.parametrize(
    "declaration, seed_dependent, message",
    [
        (CLOSED_FORM.replace("SEEDING", ""), True, None),  # the default: one run per seed
        (CLOSED_FORM.replace("SEEDING", '"seed_dependent": False,'), False, None),
        (
            CLOSED_FORM.replace("SEEDING", '"seed_dependent": "no",'),
            None,
            "DECLARATION.seed_dependent: must be true or false",
        ),
        (
            CLOSED_FORM.replace('"closed_form"', '"on_base"').replace("SEEDING", ""),
            None,
            "DECLARATION.state: an on_base method's state holds 'base', items × items",
        ),
    ],
)
def test_seed_dependent_is_declared_true_or_false(tmp_path, declaration, seed_dependent, message):
    path = tmp_path / "mine.py"
    path.write_text(f"DECLARATION = {declaration}\n")
    if message is None:
        assert registry.read_declaration(path).seed_dependent is seed_dependent
    else:
        with pytest.raises(registry.DeclarationError, match=re.escape(message)):
            registry.read_declaration(path)


# ---- planning ----


def test_paper_with_three_seeds_plans_one_mostpop_and_one_ease_closed_run_per_dataset():
    paper = load("configs/paper.yaml")
    assert paper["seeds"] == [0, 1, 2]
    plan.check_config(paper)
    seeded = ["seed0", "seed1", "seed2"]
    for dataset in paper["datasets"]:
        runs = {}
        for path in plan.run_files(paper, dataset)["metrics"]:
            _, folder_dataset, name, folder, _ = path.split("/")
            assert folder_dataset == dataset
            runs.setdefault(name, []).append(folder)
        assert runs == {
            "mostpop": ["seed-independent"],
            "ease_closed": ["seed-independent"],
            "ease": seeded,
            "ipw": seeded,
            "cvar": seeded,
            "posit": seeded,
            "causal": seeded,
            "rerank": seeded,
            "post": seeded,
        }
        # rerank and post are on ease, whose runs are per seed: so are theirs, each on its own seed
        assert plan.train_inputs(paper, dataset, "post", 1)["base_model"] == f"results/{dataset}/ease/seed1/model.pt"
    # the train jobs: one model file per run, and the bases among them
    models = {
        f"{path.rsplit('/', 1)[0]}/model.pt" for d in paper["datasets"] for path in plan.run_files(paper, d)["metrics"]
    }
    assert len(models) == 3 * (2 + 7 * 3)
    assert sum("/mostpop/" in m for m in models) == sum("/ease_closed/" in m for m in models) == 3


def test_a_method_on_a_seed_independent_base_runs_once_on_that_dataset(tmp_path):
    config = load("config.yaml")
    config["datasets"]["other"] = copy.deepcopy(config["datasets"]["ml-100k"])
    config["methods"] += ["rerank_closed"]
    config["variants"] = {"rerank_closed": {"method": "rerank", "base": "ease_closed"}}
    config["overrides"] = {"other": {"rerank_closed": {"base": "ease"}}}
    plan.check_config(config)
    assert plan.run_seeds(config, "ml-100k", "rerank_closed") == [None]
    assert plan.run_seeds(config, "other", "rerank_closed") == [0, 1, 2]  # on ease there
    assert plan.run_dir(config, "ml-100k", "rerank_closed", 2) == "results/ml-100k/rerank_closed/seed-independent"
    assert plan.base_model_input(config, "ml-100k", "rerank_closed", None) == {
        "base_model": "results/ml-100k/ease_closed/seed-independent/model.pt"
    }
    assert plan.base_model_input(config, "other", "rerank_closed", 2) == {
        "base_model": "results/other/ease/seed2/model.pt"
    }
    assert plan.base_model_input(config, "ml-100k", "ease", 2) == {}


def test_a_run_folder_that_does_not_fit_the_method_is_named(tmp_path):
    config = load("config.yaml")
    assert plan.run_seed(config, "ml-100k", "ease", "seed2") == 2
    assert plan.run_seed(config, "ml-100k", "mostpop", "seed-independent") is None
    with pytest.raises(
        plan.ConfigError,
        match="ml-100k/mostpop/seed0: mostpop gives the same result for every seed, "
        "so it runs once, in results/ml-100k/mostpop/seed-independent",
    ):
        plan.run_seed(config, "ml-100k", "mostpop", "seed0")
    with pytest.raises(
        plan.ConfigError,
        match=r"ml-100k/ease/seed-independent: ease depends on the seed, so its runs are "
        r"seed<N> folders \(seed0, seed1, seed2\)",
    ):
        plan.run_seed(config, "ml-100k", "ease", "seed-independent")


def test_the_model_file_estimate_of_paper_yaml():
    rows = job_resources.model_file_estimate(load("configs/paper.yaml"))
    by_run = {(row["dataset"], row["name"]): row for row in rows}
    n = PAPER_ITEMS["msd"]
    assert by_run["msd", "ease_closed"] == {
        "dataset": "msd",
        "name": "ease_closed",
        "runs": 1,
        "bytes_each": 4 * n * n,
        "bytes": 4 * n * n,
        "kept_bytes": 0,  # paper.yaml: model_files: temporary
    }
    assert by_run["msd", "posit"]["bytes"] == 3 * 4 * (n * n + n)  # U and the item weights
    assert by_run["msd", "rerank"]["bytes"] == 3 * 4 * n  # the popularity; the base's matrix is referred to
    # per dataset: ease_closed once and five SGD methods per seed hold an items x items matrix; POSIT's
    # item weights and the popularity of mostpop (once), rerank and post (per seed) an items vector
    expected = sum(4 * (16 * n * n + 3 * n + 7 * n) for n in PAPER_ITEMS.values())
    assert sum(row["bytes"] for row in rows) == expected
    assert round(expected / 1e9, 1) == 154.4
    assert sum(row["kept_bytes"] for row in rows) == 0
    kept = job_resources.model_file_estimate({**load("configs/paper.yaml"), "model_files": "keep"})
    assert sum(row["kept_bytes"] for row in kept) == expected


# ---- the model file's base reference ----


def train(split_files, output, method, seed, hyperparameters, base_model=None):
    inputs = {name: str(split_files / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")}
    if base_model is not None:
        inputs["base_model"] = str(base_model)
    return train_and_save(
        dataset="toy",
        method=method,
        seed=seed,
        hyperparameters=hyperparameters,
        inputs=inputs,
        output=output,
        device=torch.device("cpu"),
        environment={"device": "cpu"},
        code_version="test",
    )


@pytest.fixture
def results(tmp_path, split_files):
    """ease_closed's one run, and rerank's on it, in a results tree."""
    base = tmp_path / "results/toy/ease_closed/seed-independent/model.pt"
    rerank = tmp_path / "results/toy/rerank/seed-independent/model.pt"
    train(split_files, base, "ease_closed", None, {"l2": 20.0})
    train(split_files, rerank, "rerank", None, {"base": "ease_closed", "high": 0.3, "low": 0.05}, base_model=base)
    return base, rerank


def test_a_method_on_a_base_stores_a_reference_to_its_base_not_its_matrix(results, split_files):
    base, rerank = results
    raw = torch.load(rerank, weights_only=True)
    assert raw["seed"] is None and list(raw["state"]) == ["popularity"]
    assert raw["base"] == {
        "path": "../../ease_closed/seed-independent/model.pt",
        "sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
        "method": "ease_closed",
        "variant": "ease_closed",
        "seed": None,
    }
    assert rerank.stat().st_size < 4 * 30 * 30  # smaller than the base's 30 x 30 matrix alone
    assert torch.load(base, weights_only=True)["base"] is None
    loaded = load_model(rerank)
    assert torch.equal(loaded["state"]["base"], torch.load(base, weights_only=True)["state"]["B"])
    assert Path(loaded["base"]["path"]) == base
    # the whole tree moved elsewhere still loads: the reference is relative to the model file
    moved = base.parents[4] / "elsewhere"
    shutil.copytree(base.parents[3], moved)
    assert torch.equal(
        load_model(moved / "toy/rerank/seed-independent/model.pt")["state"]["base"], loaded["state"]["base"]
    )


def test_loading_refuses_a_changed_or_missing_base(results, split_files):
    base, rerank = results
    train(split_files, base, "ease_closed", None, {"l2": 40.0})  # the base retrained, the rerank file not
    with pytest.raises(ModelFileError) as error:
        load_model(rerank)
    message = str(error.value)
    assert message.startswith(f"{rerank}: its base model file {base} has changed since it was trained on it (sha256 ")
    assert hashlib.sha256(base.read_bytes()).hexdigest() in message and message.endswith(f"train {rerank} again")
    base.unlink()
    with pytest.raises(ModelFileError, match=re.escape(f"{rerank}: its base model file {base} is missing")):
        load_model(rerank)


def test_a_seed_independent_run_and_its_evaluation(results, split_files, tmp_path):
    base, rerank = results
    data = training_data(150, 30, 6, 40, seed=0)
    split = Split(data.train, data.validation_tr, data.validation_te)
    evaluation = {"ks": [10], "coverage_block_size": 10, "tail_interaction_share": 0.2, "batch_size": 16}
    expected = {"dataset": "toy", "variant": "rerank", "seed": None}
    record, _ = evaluate_model_file(rerank, split, evaluation, torch.device("cpu"), expected, "test", base_model=base)
    assert record["seed"] is None
    assert record["model"]["base"] == {"path": str(base), "sha256": hashlib.sha256(base.read_bytes()).hexdigest()}
    with pytest.raises(
        ValueError,
        match=re.escape(f"{rerank}: refers to the base model file {base}, but the job's base is elsewhere.pt"),
    ):
        evaluate_model_file(rerank, split, evaluation, torch.device("cpu"), expected, "test", base_model="elsewhere.pt")
    with pytest.raises(ValueError, match="the model file says seed=None, expected 0"):
        evaluate_model_file(rerank, split, evaluation, torch.device("cpu"), {**expected, "seed": 0}, "test")
    inputs = {name: str(split_files / f"{name}.npz") for name in ("train", "validation_tr", "validation_te")}
    ease = {"lr": 0.002, "wd": 1e-4, "batch_size": 32, "epochs": 1, "patience": 1}
    with pytest.raises(ValueError, match="toy/ease: ease depends on the seed; its training needs one"):
        train_model(
            dataset="toy",
            method="ease",
            seed=None,
            hyperparameters=ease,
            inputs=inputs,
            device=torch.device("cpu"),
            environment={},
            code_version="test",
        )
    # a run of a seed on a seed-independent base (a search's candidate): its seed, the base's reference
    model, _ = train_model(
        dataset="toy",
        method="post",
        seed=3,
        hyperparameters={"base": "ease_closed", "gamma": 0.1},
        inputs={**inputs, "base_model": str(base)},
        device=torch.device("cpu"),
        environment={},
        code_version="test",
    )
    assert model["seed"] == 3 and model["base"]["seed"] is None


# ---- tables ----


def write_run(folder: Path, method: str, seed, ndcg: float) -> Path:
    path = folder / method / plan.run_folder(seed) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": "toy", "method": method, "variant": method, "seed": seed, "metrics": {"ndcg@100": ndcg}}
    path.write_text(json.dumps(record))
    return path


def test_a_seed_independent_method_is_one_run_in_the_tables(tmp_path):
    paths = [write_run(tmp_path, "ease", s, v) for s, v in ((0, 0.40), (1, 0.42), (2, 0.44))]
    paths.append(write_run(tmp_path, "mostpop", None, 0.19))
    runs = tables.load_runs(paths, "toy")
    assert runs["seed"].tolist() == [0, 1, 2, None]
    summary = tables.summarise(runs).set_index("method")
    assert summary.loc["mostpop", "n_seeds"] == 1 and summary.loc["mostpop", "seeds"] == "seed-independent"
    assert summary.loc["mostpop", "ndcg@100_mean"] == 0.19 and math.isnan(summary.loc["mostpop", "ndcg@100_std"])
    assert summary.loc["ease", "seeds"] == "0 1 2"
    markdown = tables.summary_markdown(summary.reset_index(), "toy")
    assert "| mostpop | – | 0.1900 |" in markdown and "| ease | 3 | 0.4200 ± 0.0200 |" in markdown
    assert "Seeds per method: 3. mostpop gives the same result for every seed: trained and evaluated once" in markdown
    assert "mostpop & -- & $0.1900$" in tables.summary_latex(summary.reset_index(), "toy")
    with pytest.raises(ValueError, match="are both runs of mostpop, but only one of them is seed-independent"):
        tables.load_runs(paths + [write_run(tmp_path, "mostpop", 0, 0.19)], "toy")


# ---- the workflow ----


def test_a_dry_run_plans_seed_independent_runs_once_with_their_base_as_an_input(tmp_path):
    """The demo with rerank on ease_closed beside it: one train and evaluate job for mostpop,
    ease_closed and that rerank, whose evaluation reads ease_closed's model file."""
    config = load("config.yaml")
    config["methods"] += ["rerank_closed"]
    config["variants"] = {"rerank_closed": {"method": "rerank", "base": "ease_closed"}}
    done = dry_run_in(tmp_path, config, "--quiet=host")
    assert done.returncode == 0, done.stderr
    jobs = re.findall(r"rule (train|evaluate):\n    input: ([^\n]*)\n    output: ([^\n]*)", done.stdout)
    outputs = sorted(output.split(",")[0] for rule, _, output in jobs if rule == "train")
    once = ["ease_closed", "mostpop", "rerank_closed"]
    assert [o for o in outputs if o.split("/")[2] in once] == [
        f"results/ml-100k/{m}/seed-independent/model.pt" for m in once
    ]
    assert len(outputs) == 3 + 7 * 3
    evaluate_inputs = {output.split(",")[0]: inputs for rule, inputs, output in jobs if rule == "evaluate"}
    assert (
        "results/ml-100k/ease_closed/seed-independent/model.pt"
        in evaluate_inputs["results/ml-100k/rerank_closed/seed-independent/metrics.json"]
    )
    assert "results/ml-100k/ease/seed1/model.pt" in evaluate_inputs["results/ml-100k/rerank/seed1/metrics.json"]


def test_the_figures_read_a_seed_independent_run_and_say_so(tmp_path):
    from semtail import figures

    paths = {"metrics": [], "topk": [], "item_stats": []}
    for method, seed in (("ease", 0), ("ease", 1), ("mostpop", None)):
        metrics = write_run(tmp_path, method, seed, 0.4)
        record = json.loads(metrics.read_text())
        metrics.write_text(json.dumps({**record, "evaluation": {"coverage_block_size": 2}}))
        paths["metrics"].append(metrics)
        for name in ("topk", "item_stats"):
            paths[name].append(metrics.with_name(f"{name}.npz"))
    runs = figures.load_runs(paths["metrics"], paths["topk"], paths["item_stats"])
    assert [(run.method, run.seed) for run in runs] == [("ease", 0), ("ease", 1), ("mostpop", None)]
    assert figures._runs_note(runs) == "2 seeds per method; one run of a seed-independent method"
    assert figures._runs_note(runs[2:]) == "one run of a seed-independent method"
