"""The hyperparameter search's planning and selection (semtail/search.py), and a candidate's
validation scores against the evaluation of a train job's model file on the validation users."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch
import yaml
from snakemake.utils import validate

from semtail import search, selection
from semtail.candidate import train_and_validate
from semtail.evaluate import evaluate_model_file, load_split
from semtail.models.synthetic import training_data
from semtail.plan import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas/config.schema.yaml"
EVALUATION = {"ks": [5, 20], "coverage_block_size": 20, "tail_interaction_share": 0.2, "batch_size": 16}


def demo() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def with_tuning(**tuning_block) -> dict:
    config = demo()
    config["tuning"] = tuning_block
    return config


# ---- candidates and their names ----------------------------------------------------------------


def test_grid_order_and_stable_names():
    config = with_tuning(grids={"ease": {"lr": [0.001, 0.01], "wd": [0.1, 1.0]}})
    found = search.candidates(config, "ml-100k", "ease")
    assert [c.settings for c in found] == [
        {"lr": 0.001, "wd": 0.1},
        {"lr": 0.001, "wd": 1.0},
        {"lr": 0.01, "wd": 0.1},
        {"lr": 0.01, "wd": 1.0},
    ]
    names = [c.name for c in found]
    assert len(set(names)) == 4 and all(len(n) == search.NAME_LENGTH for n in names)
    # the name is the settings', whatever their order; 1 and 1.0 differ
    assert search.candidate_name({"wd": 0.1, "lr": 0.001}) == names[0]
    assert search.candidate_name({"l2": 1}) != search.candidate_name({"l2": 1.0})
    # a third value adds two candidates and keeps the others' names
    config["tuning"]["grids"]["ease"]["lr"].insert(1, 0.003)
    grown = search.candidates(config, "ml-100k", "ease")
    assert len(grown) == 6 and set(names) <= {c.name for c in grown}
    assert (
        search.candidate_files(config, "ml-100k", "ease")[0]
        == f"results/ml-100k/ease/tuning/{names[0]}/validation.json"
    )


def test_a_list_of_grids_is_their_union_and_dataset_overrides_replace_axes():
    config = with_tuning(
        grids={
            "rerank": [
                {"high": [0.2], "low": [0.1, 0.15]},
                {"high": [0.4], "low": [0.1]},
                {"high": [0.2], "low": [0.1]},
            ]
        },
        overrides={"ml-100k": {"ease": {"lr": [0.5]}}},
    )
    assert [c.settings for c in search.candidates(config, "ml-100k", "rerank")] == [
        {"high": 0.2, "low": 0.1},
        {"high": 0.2, "low": 0.15},
        {"high": 0.4, "low": 0.1},
    ]  # the repeated {0.2, 0.1} counts once
    assert search.tuned_names(config, "ml-100k") == ["ease", "rerank"]
    assert [c.settings for c in search.candidates(config, "ml-100k", "ease")] == [{"lr": 0.5}]
    config["tuning"]["grids"]["ease"] = {"lr": [0.1, 0.2], "wd": [0.3]}
    assert [c.settings for c in search.candidates(config, "ml-100k", "ease")] == [{"lr": 0.5, "wd": 0.3}]
    assert search.candidates(config, "ml-100k", "posit") == [] and not search.is_tuned(config, "ml-100k", "posit")


def test_candidate_hyperparameters_put_the_grid_on_the_resolved_ones_of_a_variant():
    config = with_tuning(grids={"posit_share": {"nstd": [0.5, 1.5]}})
    config["variants"] = {"posit_share": {"method": "posit", "ties": "share"}}
    config["methods"].append("posit_share")
    config["overrides"] = {"ml-100k": {"posit": {"lr": 0.002}}}
    candidate = search.candidates(config, "ml-100k", "posit_share")[1]
    resolved = search.candidate_hyperparameters(config, "ml-100k", "posit_share", candidate)
    assert resolved == {**config["hyperparameters"]["posit"], "lr": 0.002, "ties": "share", "nstd": 1.5}


def test_rerank_follows_the_selection_of_its_base():
    config = with_tuning(grids={"ease": {"lr": [0.001, 0.002]}, "rerank": {"low": [0.1]}})
    assert search.selections_behind(config, "ml-100k", ["rerank"]) == ["rerank", "ease"]
    assert search.selections_behind(config, "ml-100k", ["rerank"], candidate=True) == ["ease"]
    assert search.selections_behind(config, "ml-100k", ["mostpop", "ipw"]) == []
    assert search.candidate_inputs(config, "ml-100k", "rerank")["base_model"] == "results/ml-100k/ease/seed0/model.pt"
    config["experiment"] = "search"
    config["tuning"]["seed"] = 4
    assert (
        search.candidate_inputs(config, "ml-100k", "rerank")["base_model"]
        == "results/search/ml-100k/ease/seed4/model.pt"
    )
    assert search.tuning_targets(config) == [
        "results/search/ml-100k/ease/selected.yaml",
        "results/search/ml-100k/rerank/selected.yaml",
        "results/search/ml-100k/tuning.csv",
        "results/search/ml-100k/tuning.md",
    ]
    assert search.tuning_targets(demo()) == []


def test_several_search_seeds_give_one_file_per_candidate_and_seed_the_first_on_the_single_seed_path():
    config = with_tuning(grids={"ease": {"lr": [0.001, 0.002]}, "rerank": {"low": [0.1]}})
    one_seed = search.candidate_files(config, "ml-100k", "ease")
    assert search.search_seeds(config) == [0]
    del config["tuning"]["grids"]["rerank"]
    config["tuning"]["seeds"] = [3, 1]
    first, second = (c.name for c in search.candidates(config, "ml-100k", "ease"))
    assert search.search_seeds(config) == [3, 1]
    assert search.candidate_files(config, "ml-100k", "ease") == [
        f"results/ml-100k/ease/tuning/{first}/validation.json",
        f"results/ml-100k/ease/tuning/{first}/seed1/validation.json",
        f"results/ml-100k/ease/tuning/{second}/validation.json",
        f"results/ml-100k/ease/tuning/{second}/seed1/validation.json",
    ]
    assert search.candidate_files(config, "ml-100k", "ease")[::2] == one_seed  # the first seed's paths as before
    assert (
        search.candidate_checkpoint(config, "ml-100k", "ease", first, 1)
        == f"results/ml-100k/ease/tuning/{first}/seed1/checkpoint.pt"
    )
    assert (
        search.candidate_checkpoint(config, "ml-100k", "ease", first, 3)
        == f"results/ml-100k/ease/tuning/{first}/checkpoint.pt"
    )
    config["tuning"]["grids"]["rerank"] = {"low": [0.1]}
    assert (
        search.candidate_inputs(config, "ml-100k", "rerank", 1)["base_model"] == "results/ml-100k/ease/seed1/model.pt"
    )
    assert search.candidate_inputs(config, "ml-100k", "rerank")["base_model"] == "results/ml-100k/ease/seed3/model.pt"
    validate(config, str(SCHEMA))
    search.check_tuning(config)
    config["tuning"]["seed"] = 0
    with pytest.raises(ConfigError, match=r"tuning: give `seeds` \(a list\) or `seed` \(one seed\), not both"):
        search.check_tuning(config)
    for seeds in ([0, 0], [], [-1], [2**63]):
        with pytest.raises(Exception, match="seeds"):
            validate(with_tuning(seeds=seeds), str(SCHEMA))


# ---- config checks -----------------------------------------------------------------------------


def test_shipped_search_config_is_valid():
    config = yaml.safe_load((ROOT / "configs/demo_search.yaml").read_text())
    validate(config, str(SCHEMA))
    search.check_tuning(config)
    counts = {name: len(search.candidates(config, "ml-100k", name)) for name in search.tuned_names(config, "ml-100k")}
    # the grids of docs/hyperparameters.md
    assert counts == {
        "ease_closed": 6,
        "ease": 20,
        "ipw": 5,
        "cvar": 12,
        "posit": 48,
        "causal": 32,
        "rerank": 26,
        "post": 8,
    }
    rerank = search.candidates(config, "ml-100k", "rerank")
    assert all(c.settings["high"] > c.settings["low"] for c in rerank)


@pytest.mark.parametrize(
    "block, named",
    [
        ({"grids": {"slim": {"l2": [1.0]}}}, r"tuning\.grids: 'slim' is not in methods"),
        ({"grids": {"ease": {"lrr": [0.1]}}}, r"tuning\.grids\.ease: \['lrr'\] are not hyperparameters of ease"),
        ({"grids": {"ease": {"lr": ["fast"]}}}, r"tuning\.grids\.ease: the candidate \{'lr': 'fast'\}: .*lr.*'fast'"),
        (
            {"grids": {"rerank": {"high": [0.1, 0.3], "low": [0.2]}}},
            r"tuning\.grids\.rerank: the candidate \{'high': 0\.1, 'low': 0\.2\}: .*high",
        ),
        ({"grids": {"rerank": {"base": ["ease_closed"]}}}, r"rerank's base is not searched"),
        ({"metric": "gini@100"}, r"tuning\.metric: 'gini@100' is not a metric a search can maximise"),
        ({"metric": "ndcg@7"}, r"tuning\.metric: 'ndcg@7'.*\[20, 50, 100\]"),
        ({"selection": {"rerank": {"within": {"arp@20": 0.1}}}}, r"tuning\.selection\.rerank\.within: 'arp@20'"),
        (
            {"overrides": {"ml-20m": {"ease": {"lr": [1.0]}}}},
            r"tuning\.overrides: 'ml-20m' is not a configured dataset",
        ),
        (
            {"overrides": {"ml-100k": {"ease": {"lr": [-1.0]}}}},
            r"tuning\.overrides\.ml-100k\.ease: the candidate \{'lr': -1\.0\}",
        ),
    ],
)
def test_bad_search_settings_are_named(block, named):
    with pytest.raises(ConfigError, match=named):
        search.check_tuning(with_tuning(**block))


def test_a_candidate_is_checked_as_its_own_job_not_as_every_variant_of_its_method():
    """rerank_x (high 0.17) keeps low 0.15 whatever rerank's grid: rerank's candidate low 0.18 is
    valid (rerank's high is 0.2), though it would not be for rerank_x."""
    config = with_tuning(grids={"rerank": {"low": [0.1, 0.18]}})
    config["variants"] = {"rerank_x": {"method": "rerank", "high": 0.17}}
    config["methods"].append("rerank_x")
    search.check_tuning(config)
    config["tuning"]["grids"]["rerank_x"] = {"low": [0.1, 0.18]}
    with pytest.raises(
        ConfigError,
        match=r"tuning\.grids\.rerank_x: the candidate \{'low': 0\.18\}: rerank_x for ml-100k: high \(0\.17\)",
    ):
        search.check_tuning(config)


# ---- the selection rule ------------------------------------------------------------------------


def test_the_highest_metric_wins_and_a_tie_goes_to_the_first_in_grid_order():
    scores = [
        ("a", {"ndcg@100": 0.50}),
        ("b", {"ndcg@100": 0.52}),
        ("c", {"ndcg@100": 0.52}),
        ("d", {"ndcg@100": 0.51}),
    ]
    assert selection.choose(scores, "ndcg@100") == ("b", [True] * 4)
    assert selection.choose(scores[::-1], "ndcg@100")[0] == "c"  # the same tie in the other order
    assert selection.choose([("only", {"ndcg@100": 0.0})], "ndcg@100")[0] == "only"
    with pytest.raises(ValueError, match="candidate a: no finite 'recall@20'"):
        selection.choose(scores, "recall@20")
    with pytest.raises(ValueError, match="no candidates"):
        selection.choose([], "ndcg@100")


def test_a_guard_keeps_only_candidates_close_to_the_best():
    # best NDCG 0.500: the floor at 1% is 0.495, so c (0.494) is out, though it covers most
    scores = [
        ("a", {"ndcg@100": 0.500, "coverage@100": 600.0}),
        ("b", {"ndcg@100": 0.496, "coverage@100": 650.0}),
        ("c", {"ndcg@100": 0.494, "coverage@100": 900.0}),
        ("d", {"ndcg@100": 0.495, "coverage@100": 650.0}),
    ]
    chosen, eligible = selection.choose(scores, "coverage@100", {"ndcg@100": 0.01})
    assert (chosen, eligible) == ("b", [True, True, False, True])  # b and d tie: b comes first


def record(name, settings, ndcg, coverage=500.0):
    return {
        "dataset": "ml-100k",
        "method": "ease",
        "candidate": name,
        "settings": settings,
        "hyperparameters": {"lr": settings["lr"], "wd": 0.1},
        "best_epoch": 3,
        "metrics": {"ndcg@100": ndcg, "coverage@100": coverage, "recall@20": 0.1},
    }


def test_selected_yaml_holds_the_choice_the_rule_and_every_candidate(tmp_path):
    records = [
        record("aaa", {"lr": 0.001}, 0.53),
        record("bbb", {"lr": 0.002}, 0.54),
        record("ccc", {"lr": 0.004}, 0.54),
    ]
    document = selection.selected_document(
        dataset="ml-100k", name="ease", method="ease", records=records, metric="ndcg@100", within={}, seeds=[0]
    )
    path = tmp_path / "selected.yaml"
    selection.write_selected(path, document)
    assert "&id" not in path.read_text()  # no YAML aliases
    read = selection.read_selected(path, "ml-100k", "ease")
    assert read["chosen"] == "bbb" and read["hyperparameters"] == {"lr": 0.002, "wd": 0.1}
    assert read["metric"] == "ndcg@100" and read["seeds"] == [0] and read["split"] == "validation"
    assert "sd" not in read["candidates"][0] and read["at_grid_edge"] == {}  # bbb's 0.002 is inside 0.001–0.004
    assert [(c["name"], c["chosen"], c["metrics"]["ndcg@100"]) for c in read["candidates"]] == [
        ("aaa", False, 0.53),
        ("bbb", True, 0.54),
        ("ccc", False, 0.54),
    ]
    with pytest.raises(ValueError, match=r"selected\.yaml: method is 'ease', expected 'ipw'"):
        selection.read_selected(path, "ml-100k", "ipw")
    table = selection.tuning_table([read])
    assert table["chosen"].tolist() == [False, True, False] and table["settings"].tolist()[0] == "lr=0.001"
    markdown = selection.tuning_markdown([read], "ml-100k")
    assert "| **bbb** | **lr=0.002** | **0.5400** |" in markdown


def seed_record(name, settings, seed, ndcg, coverage=500.0):
    return {**record(name, settings, ndcg, coverage), "seed": seed, "best_epoch": 3 + seed}


def test_the_selection_takes_the_mean_over_seeds_and_reports_its_spread(tmp_path):
    # seed 0 alone prefers aaa (0.56 > 0.54); over three seeds bbb is ahead:
    # aaa: (0.56 + 0.50 + 0.51) / 3 = 0.52333..., bbb: (0.54 + 0.53 + 0.55) / 3 = 0.54
    ndcg = {"aaa": [0.56, 0.50, 0.51], "bbb": [0.54, 0.53, 0.55]}
    lr = {"aaa": 0.001, "bbb": 0.002}
    records = [seed_record(name, {"lr": lr[name]}, seed, ndcg[name][seed]) for name in ndcg for seed in (2, 0, 1)]
    document = selection.selected_document(
        dataset="ml-100k", name="ease", method="ease", records=records, metric="ndcg@100", within={}, seeds=[0, 1, 2]
    )
    assert document["chosen"] == "bbb" and document["seeds"] == [0, 1, 2]
    assert "mean over 3 seeds" in document["rule"]
    aaa, bbb = document["candidates"]
    assert aaa["metrics"]["ndcg@100"] == pytest.approx(0.5233333333333333, abs=1e-12)
    assert bbb["metrics"]["ndcg@100"] == pytest.approx(0.54, abs=1e-12)
    # sample SDs: aaa's deviations 0.036667, -0.023333, -0.013333 -> sqrt(0.0020667 / 2) = 0.032146
    assert aaa["sd"]["ndcg@100"] == pytest.approx(0.0321455025, abs=1e-9)
    assert bbb["sd"]["ndcg@100"] == pytest.approx(0.01, abs=1e-12)
    assert bbb["best_epochs"] == [3, 4, 5]  # in seed order
    assert document["at_grid_edge"] == {"lr": "largest"}
    path = tmp_path / "selected.yaml"
    selection.write_selected(path, document)
    table = selection.tuning_table([selection.read_selected(path)])
    assert table["n_seeds"].tolist() == [3, 3]
    assert table["ndcg@100_sd"].round(6).tolist() == [0.032146, 0.01]
    assert table["at_grid_edge"].tolist() == ["", "lr=0.002 (largest)"]
    markdown = selection.tuning_markdown([document], "ml-100k")
    assert "| aaa | lr=0.001 | 0.5233 ± 0.0321 |" in markdown and "mean over seeds 0, 1, 2" in markdown
    assert "**At the edge of the grid:** lr=0.002 (largest)" in markdown
    with pytest.raises(ValueError, match=r"candidate aaa: validation records of seeds \[0, 2\], expected \[0, 1, 2\]"):
        selection.selected_document(
            dataset="ml-100k",
            name="ease",
            method="ease",
            records=[r for r in records if r["seed"] != 1 or r["candidate"] != "aaa"],
            metric="ndcg@100",
            within={},
            seeds=[0, 1, 2],
        )


def test_grid_edges_name_the_chosen_values_at_the_end_of_their_axis():
    # a hand-made grid: lr 3 values, wd 2, adversary (names, no order), batch_size a single value
    grid = [
        {"lr": lr, "wd": wd, "adversary": adversary, "batch_size": 64}
        for lr in (0.001, 0.003, 0.01)
        for wd in (0.1, 0.01)
        for adversary in ("2mlp2", "2mlp50")
    ]
    assert selection.grid_edges(grid, {"lr": 0.01, "wd": 0.01, "adversary": "2mlp50", "batch_size": 64}) == {
        "lr": "largest",
        "wd": "smallest",
    }
    assert selection.grid_edges(grid, {"lr": 0.003, "wd": 0.1, "adversary": "2mlp2", "batch_size": 64}) == {
        "wd": "largest"
    }
    assert selection.grid_edges(grid, {"lr": 0.001, "wd": 0.05, "adversary": "2mlp2", "batch_size": 64}) == {
        "lr": "smallest"
    }
    # a union of products: rerank's low spans 0.05-0.3 over all of them, though 0.15 ends the first
    union = [{"high": 0.2, "low": low} for low in (0.05, 0.1, 0.15)] + [{"high": 0.7, "low": low} for low in (0.1, 0.3)]
    assert selection.grid_edges(union, {"high": 0.2, "low": 0.15}) == {"high": "smallest"}
    assert selection.grid_edges([{"ties": True}, {"ties": False}], {"ties": True}) == {}  # booleans have no edge
    documents = [
        {"method": "ease", "settings": {"lr": 0.01, "wd": 0.01}, "at_grid_edge": {"lr": "largest", "wd": "smallest"}},
        {"method": "ipw", "settings": {"alpha": 0.002}, "at_grid_edge": {}},
    ]
    assert selection.grid_edge_warnings(documents) == [
        "ease: the search chose lr=0.01 (largest), wd=0.01 (smallest) of its grid; a better value may lie beyond it."
    ]
    markdown = selection.grid_edge_markdown(selection.grid_edge_warnings(documents))
    assert markdown.startswith("\n## Hyperparameters at the edge of their grid\n\n- ease: the search chose lr=0.01")
    assert selection.grid_edge_markdown([]) == ""


# ---- a candidate's validation scores -----------------------------------------------------------


def test_a_candidate_scores_what_the_evaluation_of_its_model_file_gives_on_the_validation_users(tmp_path):
    """train_and_validate against an independent route: the train job's model file (train_and_save),
    evaluated as the evaluate rule does, with the validation rows as its test users."""
    from semtail.train_job import train_and_save

    data = training_data(150, 30, 6, 40, seed=3)
    inputs = {}
    for name in ("train", "validation_tr", "validation_te"):
        inputs[name] = str(tmp_path / f"{name}.npz")
        sp.save_npz(inputs[name], getattr(data, name))
    hyperparameters = {"lr": 0.003, "wd": 1e-4, "batch_size": 32, "epochs": 3, "patience": 3, "drop_last": False}
    common = dict(
        dataset="toy",
        method="ease",
        seed=2,
        hyperparameters=hyperparameters,
        inputs=inputs,
        device=torch.device("cpu"),
        environment={"device": "cpu"},
        code_version="x",
    )
    record, run = train_and_validate(
        variant="ease_fast",
        candidate="abc",
        settings={"lr": 0.003},
        evaluation=EVALUATION,
        checkpoint=str(tmp_path / "candidate.checkpoint.pt"),
        **common,
    )
    run.remove_checkpoint()
    train_and_save(output=tmp_path / "model.pt", **common)
    split = load_split(inputs["train"], inputs["validation_tr"], inputs["validation_te"])
    expected, _ = evaluate_model_file(tmp_path / "model.pt", split, EVALUATION, torch.device("cpu"))
    assert record["metrics"] == expected["metrics"]
    assert record["hyperparameters"] == hyperparameters and record["settings"] == {"lr": 0.003}
    assert (record["method"], record["trains"]) == ("ease_fast", "ease")
    assert record["n_validation_users"] == 40 and record["best_epoch"] == expected["model"]["best_epoch"]
    assert not list(tmp_path.glob("candidate.checkpoint.pt*"))


def test_a_candidate_with_ks_beyond_the_catalog_is_refused_before_it_trains(tmp_path, caplog):
    data = training_data(60, 12, 4, 20, seed=1)
    inputs = {}
    for name in ("train", "validation_tr", "validation_te"):
        inputs[name] = str(tmp_path / f"{name}.npz")
        sp.save_npz(inputs[name], getattr(data, name))
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(ValueError, match=r"evaluation\.ks: \[20\] is larger than the 12 items of toy"),
    ):
        train_and_validate(
            candidate="abc",
            settings={},
            evaluation=EVALUATION,
            dataset="toy",
            method="mostpop",
            seed=0,
            hyperparameters={},
            inputs=inputs,
            device=torch.device("cpu"),
            environment={},
            code_version="x",
        )
    assert "training" not in caplog.text
