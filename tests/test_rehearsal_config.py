"""configs/rehearsal.yaml and configs/rehearsal-all.yaml: configs/paper.yaml's methods, preprocessing
and hyperparameters on synthetic stand-ins of its datasets' exact shapes, with 2 epochs and 1 seed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from semtail import config_schema, plan

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
# The published sizes after the paper's filters (Liang et al. 2018; ML-20M's exact count of its "10.0M").
SHAPES = {
    "ml-20m": (136_677, 20_108, 9_990_682),
    "netflix": (463_435, 17_769, 56_880_037),
    "msd": (571_355, 41_140, 33_633_450),
}
REHEARSALS = {"rehearsal.yaml": ["ml-20m"], "rehearsal-all.yaml": ["ml-20m", "netflix", "msd"]}


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "configs" / name).read_text())


@pytest.mark.parametrize("name", REHEARSALS)
def test_rehearsal_is_the_paper_config_but_for_data_epochs_and_seeds(name):
    rehearsal = load(name)
    datasets = REHEARSALS[name]
    assert rehearsal["experiment"] == name.removesuffix(".yaml")
    assert rehearsal["seeds"] == [0]
    assert list(rehearsal["datasets"]) == [f"{d}-shape" for d in datasets]
    expected = copy.deepcopy(PAPER)
    for settings in expected["hyperparameters"].values():
        if "epochs" in settings:
            settings.update(epochs=2, patience=2)
    for key in ("methods", "hyperparameters", "evaluation", "compute", "checkpoints", "model_files"):
        assert rehearsal[key] == expected[key], key
    overrides = {d.removesuffix("-shape"): values for d, values in rehearsal["overrides"].items()}
    assert overrides == {d: PAPER["overrides"][d] for d in datasets if d in PAPER["overrides"]}
    for dataset in datasets:
        settings = rehearsal["datasets"][f"{dataset}-shape"]
        assert settings["preprocess"] == PAPER["datasets"][dataset]["preprocess"]
        users, items, interactions = SHAPES[dataset]
        (source,) = settings["sources"]
        assert source["format"] == "synthetic"
        assert (source["synthetic"]["users"], source["synthetic"]["items"]) == (users, items)
        assert source["synthetic"]["interactions"] == interactions
        assert settings["expected"] == {"users": users, "items": items, "interactions": interactions}
        # The filters drop nothing: every user and item has at least their minimum.
        assert source["synthetic"].get("min_user_positives", 5) >= settings["preprocess"]["min_uc"]
        assert source["synthetic"].get("min_item_positives", 10) >= settings["preprocess"]["min_sc"]


@pytest.mark.parametrize("name", REHEARSALS)
def test_rehearsal_passes_the_config_checks(name):
    config = load(name)
    config_schema.check_against_schema(config, config_schema.load_schema(REPO / "schemas" / "config.schema.yaml"))
    plan.check_config(config)
