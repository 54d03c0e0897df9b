"""The config: the schema catches typos and wrong types by name; planning resolves what each job gets."""

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from semtail import job_resources, plan, registry, search
from workflow_runs import dry_run_in

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
        (lambda c: c["hyperparameters"].update(Posit={}), "Posit"),
        (lambda c: c["datasets"]["ml-100k"]["preprocess"].update(min_uc=-1), "-1"),
        (lambda c: c["datasets"]["ml-100k"]["preprocess"].update(seed=2**32), "4294967296 is greater than the maximum"),
        (
            lambda c: c["datasets"]["ml-100k"].update(expected={"users": 9, "interactions_relative_tolerance": 0.1}),
            "'interactions' is a dependency of 'interactions_relative_tolerance'",
        ),
        (
            lambda c: c["datasets"]["ml-100k"].update(
                expected={"interactions": 9, "interactions_relative_tolerance": 1.5}
            ),
            "1.5",
        ),
        (lambda c: c["datasets"]["ml-100k"]["sources"][0].update(md5="xyz"), "xyz"),
        (lambda c: c["compute"].update(device="tpu"), "tpu"),
        (lambda c: c.update(methods=["posit", "Slim"]), "Slim"),
        (lambda c: c.update(variants={"posit_2": {"ties": "share"}}), "'method' is a required property"),
        (lambda c: c.update(experiment="My run"), "My run"),
        (lambda c: c["checkpoints"].update(every_epochs=0), "0 is less than the minimum of 1"),
        (lambda c: c["checkpoints"].update(min_seconds=-5), "-5"),
        (lambda c: c["checkpoints"].update(every_epoch=2), "every_epoch"),
    ],
)
def test_schema_rejects_and_names_the_bad_key_or_value(demo, mutate, named):
    config = copy.deepcopy(demo)
    mutate(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, SCHEMA)
    assert named in str(error.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["hyperparameters"]["posit"].update(lrr=0.1),
            r"hyperparameters\.posit: \['lrr'\] are not hyperparameters of posit",
        ),
        (
            lambda c: c["hyperparameters"]["posit"].update(lr="fast"),
            "hyperparameters.posit.lr: 'fast' is not a finite number",
        ),
        (lambda c: c["hyperparameters"]["posit"].update(lr=0), "hyperparameters.posit.lr: 0 must be greater than 0"),
        (lambda c: c["hyperparameters"]["posit"].update(k=1.5), "hyperparameters.posit.k: 1.5 is not an integer"),
        (
            lambda c: c["hyperparameters"]["posit"].update(ones_aware="no"),
            "hyperparameters.posit.ones_aware: 'no' is not a boolean",
        ),
        (
            lambda c: c["hyperparameters"]["posit"].update(adversary="3mlp"),
            "hyperparameters.posit.adversary: '3mlp' does not match",
        ),
        (lambda c: c["hyperparameters"]["cvar"].update(beta=1.5), "hyperparameters.cvar.beta: 1.5 must be at most 1"),
        (lambda c: c["hyperparameters"].update(slim={}), "hyperparameters: 'slim' is not a method"),
        (
            lambda c: c.update(variants={"posit_2": {"method": "slim"}}),
            "variants.posit_2.method: 'slim' is not a method",
        ),
        (
            lambda c: c.update(variants={"posit_x": {"method": "posit", "ties": "shared"}}, methods=["posit_x"]),
            "variants.posit_x.ties: 'shared' is not one of topk, share",
        ),
        (
            lambda c: c.update(overrides={"ml-100k": {"ease": {"wd": -1.0}}}),
            "overrides.ml-100k.ease.wd: -1.0 must be at least 0",
        ),
        (lambda c: c["hyperparameters"]["ipw"].pop("alpha"), r"ipw for ml-100k: missing \['alpha'\]"),
        (
            lambda c: c["hyperparameters"]["post"].update(gamma=-0.1),
            "hyperparameters.post.gamma: -0.1 must be at least 0",
        ),
        (
            lambda c: c["hyperparameters"]["post"].update(base="mostpop"),
            "post for ml-100k: its base 'mostpop' is a mostpop run",
        ),
        (
            lambda c: c["hyperparameters"]["rerank"].update(base="mostpop"),
            "rerank for ml-100k: its base 'mostpop' is a mostpop run",
        ),
    ],
)
def test_method_keys_are_checked_against_the_declarations_naming_the_key(demo, mutate, message):
    config = copy.deepcopy(demo)
    mutate(config)
    validate(config, SCHEMA)  # the schema leaves the methods' keys to the declarations
    with pytest.raises(plan.ConfigError, match=message):
        plan.check_config(config)


def test_declared_defaults_fill_what_a_config_leaves_out(demo):
    config = copy.deepcopy(demo)
    for key in (
        "epochs",
        "patience",
        "drop_last",
        "k",
        "signal_momentum",
        "ties",
        "adversary_init",
        "lam",
        "awd",
        "ones_aware",
    ):
        config["hyperparameters"]["posit"].pop(key)
    del config["hyperparameters"]["mostpop"]
    validate(config, SCHEMA)
    plan.check_config(config)
    posit = plan.resolve_hyperparameters(config, "ml-100k", "posit")
    assert posit == demo["hyperparameters"]["posit"]  # the demo's values are the declared defaults
    assert list(posit) == list(registry.declaration("posit").hyperparameters)
    assert plan.resolve_hyperparameters(config, "ml-100k", "mostpop") == {}


def test_schema_takes_an_approximate_interaction_count(demo):
    config = copy.deepcopy(demo)
    config["datasets"]["ml-100k"]["expected"] = {"interactions": 55000, "interactions_relative_tolerance": 0.01}
    validate(config, SCHEMA)
    assert config["datasets"]["ml-100k"]["expected"] == {"interactions": 55000, "interactions_relative_tolerance": 0.01}
    paper = load("configs/paper.yaml")["datasets"]
    assert {name: paper[name]["expected"].get("interactions_relative_tolerance") for name in paper} == {
        "ml-20m": 0.005,
        "netflix": 0.001,
        "msd": None,
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
    with pytest.raises(plan.ConfigError, match="rerank for ml-100k: its base 'ease' must also be in methods"):
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
    assert "results/ml-100k/adversary.md" in targets and "results/ml-100k/figures/adversary.pdf" in targets
    without_posit = dict(demo, methods=["mostpop", "ease"])
    assert not any("weight_landscape" in t or "adversary" in t for t in plan.final_targets(without_posit))


def test_run_files_list_every_method_and_seed(demo):
    files = plan.run_files(demo, "ml-100k")
    # mostpop and ease_closed run once; the 7 others once per seed
    assert demo["methods"][:2] == ["mostpop", "ease_closed"]
    assert len(files["metrics"]) == 2 + 7 * len(demo["seeds"])
    assert files["metrics"][0] == "results/ml-100k/mostpop/seed-independent/metrics.json"
    assert files["metrics"][2] == f"results/ml-100k/ease/seed{demo['seeds'][0]}/metrics.json"


def test_rerank_trains_on_its_base_model_of_the_same_seed(demo):
    inputs = plan.train_inputs(demo, "ml-100k", "rerank", 2)
    assert inputs["base_model"] == "results/ml-100k/ease/seed2/model.pt"
    assert "base_model" not in plan.train_inputs(demo, "ml-100k", "posit", 2)


def test_cpu_device_requests_no_gpu(demo):
    assert job_resources.gpus_per_job(demo) == 1
    assert job_resources.gpus_per_job(dict(demo, compute={"device": "cpu", "gpus_per_job": 1})) == 0


def test_snakemake_fails_at_once_on_a_typo(tmp_path, demo):
    config = copy.deepcopy(demo)
    config["hyperparameters"]["ease"]["epochs_"] = 3
    done = dry_run_in(tmp_path, config)
    assert done.returncode != 0
    assert "epochs_" in done.stdout + done.stderr


def test_variants_resolve_over_their_method_and_the_dataset_overrides(demo):
    config = copy.deepcopy(demo)
    config["datasets"]["other"] = config["datasets"]["ml-100k"]
    config["methods"] = ["ease", "posit", "posit_share", "ease_slow"]
    config["variants"] = {
        "posit_share": {"method": "posit", "ties": "share", "lr": 0.02},
        "ease_slow": {"method": "ease", "lr": 0.0001},
    }
    config["overrides"] = {"other": {"posit": {"lr": 0.5, "nstd": 2.0}, "posit_share": {"nstd": 3.0}}}
    validate(config, SCHEMA)
    plan.check_config(config)
    posit = demo["hyperparameters"]["posit"]
    assert plan.resolve_hyperparameters(config, "ml-100k", "posit_share") == {**posit, "ties": "share", "lr": 0.02}
    # defaults, then the dataset's overrides of posit, then the variant, then its own overrides
    assert plan.resolve_hyperparameters(config, "other", "posit_share") == {
        **posit,
        "ties": "share",
        "lr": 0.02,
        "nstd": 3.0,
    }
    assert plan.resolve_hyperparameters(config, "other", "posit") == {**posit, "lr": 0.5, "nstd": 2.0}
    assert plan.resolve_hyperparameters(config, "other", "ease_slow") == {
        **demo["hyperparameters"]["ease"],
        "lr": 0.0001,
    }
    assert plan.method_of(config, "posit_share") == "posit" and plan.method_of(config, "ease") == "ease"
    assert (
        plan.run_files(config, "ml-100k")["metrics"][2 * len(demo["seeds"])]
        == "results/ml-100k/posit_share/seed0/metrics.json"
    )
    assert plan.weighted_runs(config) == ["posit", "posit_share"]
    assert plan.weight_landscape_evaluations(config, "ml-100k")[0] == "results/ml-100k/posit/seed0/items.npz"
    assert (
        plan.adversary_evaluations(config, "ml-100k")[-1]
        == f"results/ml-100k/posit_share/seed{demo['seeds'][-1]}/metrics.json"
    )


def test_a_variant_changing_one_setting_changes_only_its_own_jobs(demo):
    config = copy.deepcopy(demo)
    config["methods"] = ["posit", "posit_share"]
    config["variants"] = {"posit_share": {"method": "posit", "ties": "share"}}
    before = {name: plan.resolve_hyperparameters(config, "ml-100k", name) for name in config["methods"]}
    config["variants"]["posit_share"]["nstd"] = 0.5
    after = {name: plan.resolve_hyperparameters(config, "ml-100k", name) for name in config["methods"]}
    assert after["posit"] == before["posit"] and after["posit_share"] != before["posit_share"]


def test_variant_errors_name_the_key(demo):
    def check(variants, methods, message):
        config = copy.deepcopy(demo)
        config["variants"], config["methods"] = variants, methods
        with pytest.raises(plan.ConfigError, match=message):
            plan.check_config(config)

    check({"ease": {"method": "posit"}}, ["ease"], "variants: 'ease' is also the name of a method")
    check(
        {"posit_x": {"method": "posit", "tie": "share"}},
        ["posit_x"],
        r"variants.posit_x: \['tie'\] are not hyperparameters of posit",
    )
    check({}, ["posit", "slim"], "methods: 'slim' is neither a method .* nor a variant")
    check(
        {"rerank_x": {"method": "rerank", "base": "ease_fast"}},
        ["ease", "rerank_x"],
        "rerank_x for ml-100k: its base 'ease_fast'",
    )
    check(
        {"post_x": {"method": "post", "gamma": 0.1}},
        ["post_x"],
        "post_x for ml-100k: its base 'ease' must also be in methods",
    )
    check(
        {"rerank_x": {"method": "rerank", "low": 0.3}},
        ["ease", "rerank_x"],
        r"rerank_x for ml-100k: high \(0.2\) must be greater than low \(0.3\)",
    )


def test_a_variant_trains_and_is_resourced_as_its_method(demo):
    config = copy.deepcopy(demo)
    config["methods"] = ["mostpop", "popular", "ease", "ease_b", "rerank_b"]
    config["variants"] = {
        "popular": {"method": "mostpop"},
        "ease_b": {"method": "ease", "batch_size": 128},
        "rerank_b": {"method": "rerank", "base": "ease_b"},
    }
    plan.check_config(config)
    assert job_resources.training_gpus(config, "popular") == 0 and job_resources.training_gpus(config, "ease_b") == 1
    assert plan.train_inputs(config, "ml-100k", "rerank_b", 1)["base_model"] == "results/ml-100k/ease_b/seed1/model.pt"
    assert job_resources.resources(config, "train", "ml-100k", method="ease_b") == {
        **job_resources.resources(
            dict(
                config,
                hyperparameters={
                    **config["hyperparameters"],
                    "ease": {**config["hyperparameters"]["ease"], "batch_size": 128},
                },
            ),
            "train",
            "ml-100k",
            method="ease",
        ),
    }


def test_an_experiment_has_results_and_logs_of_its_own(demo):
    config = dict(demo, experiment="ablation")
    assert plan.results_root(config) == "results/ablation" and plan.logs_root(config) == "logs/ablation"
    assert "results/ablation/ml-100k/summary.md" in plan.final_targets(config)
    assert "results/ablation/ml-100k/figures/adversary.png" in plan.final_targets(config)
    assert plan.run_dir(config, "ml-100k", "ease", 0) == "results/ablation/ml-100k/ease/seed0"
    assert (
        plan.train_inputs(config, "ml-100k", "ease", 0)["train"] == f"{plan.processed_dir(demo, 'ml-100k')}/train.npz"
    )
    assert plan.results_root(demo) == "results"


def settings_hash(settings: dict) -> str:
    """The split key written out: sha256 of the settings as sorted JSON, threshold and test_prop as
    floats, the first 10 hex digits."""
    import hashlib
    import json

    normal = {"threshold": None, **settings}
    for key in ("threshold", "test_prop"):
        normal[key] = None if normal[key] is None else float(normal[key])
    return hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()[:10]


def test_a_split_lives_in_a_folder_of_its_preprocess_settings(demo):
    """Each dataset's split is data/processed/<dataset>/<hash of its preprocess settings>/, so that
    configs splitting one dataset otherwise keep their own; settings that split alike share it."""
    settings = demo["datasets"]["ml-100k"]["preprocess"]
    folder = f"data/processed/ml-100k/{settings_hash(settings)}"
    assert plan.processed_dir(demo, "ml-100k") == folder
    assert plan.train_inputs(demo, "ml-100k", "ease", 0) == {
        "train": f"{folder}/train.npz",
        "validation_tr": f"{folder}/validation_tr.npz",
        "validation_te": f"{folder}/validation_te.npz",
        "stats": f"{folder}/stats.json",
    }
    assert plan.evaluation_inputs(demo, "ml-100k") == {
        "train": f"{folder}/train.npz",
        "test_tr": f"{folder}/test_tr.npz",
        "test_te": f"{folder}/test_te.npz",
        "test_users": f"{folder}/test_users.txt",
    }
    assert plan.run_files(demo, "ml-100k")["train"] == f"{folder}/train.npz"

    other = copy.deepcopy(demo)
    other["datasets"]["ml-100k"]["preprocess"]["n_heldout"] = 60
    assert (
        plan.processed_dir(other, "ml-100k") == f"data/processed/ml-100k/{settings_hash({**settings, 'n_heldout': 60})}"
    )
    assert plan.processed_dir(other, "ml-100k") != folder
    same = copy.deepcopy(demo)
    same["datasets"]["ml-100k"]["preprocess"] = dict(reversed(settings.items()))
    assert plan.processed_dir(same, "ml-100k") == folder  # key order does not matter
    whole = {**settings, "threshold": 4, "test_prop": 0.25}
    as_floats = {**settings, "threshold": 4.0, "test_prop": 0.25}
    assert plan.split_key({"datasets": {"d": {"preprocess": whole}}}, "d") == settings_hash(as_floats)
    without = {k: v for k, v in settings.items() if k != "threshold"}
    assert plan.split_key({"datasets": {"d": {"preprocess": without}}}, "d") == plan.split_key(
        {"datasets": {"d": {"preprocess": {**settings, "threshold": None}}}}, "d"
    )


def test_the_split_files_are_the_preprocess_outputs(demo):
    from semtail.datasets.preprocess import OUTPUT_NAMES

    assert list(plan.SPLIT_FILES) == list(OUTPUT_NAMES)
    folder = plan.processed_dir(demo, "ml-100k")
    patterns = plan.split_file_patterns()
    assert plan.split_files(demo, "ml-100k") == {
        name: pattern.format(dataset="ml-100k", split=folder.rsplit("/", 1)[1]) for name, pattern in patterns.items()
    }
    assert patterns["item_ids"] == "data/processed/{dataset}/{split}/items.txt"


def test_a_split_of_other_settings_is_refused_by_name(demo):
    key = plan.split_key(demo, "ml-100k")
    assert plan.split_settings(demo, "ml-100k", key) == demo["datasets"]["ml-100k"]["preprocess"]
    with pytest.raises(plan.ConfigError) as error:
        plan.split_settings(demo, "ml-100k", "0123456789")
    assert str(error.value).startswith(
        f"data/processed/ml-100k/0123456789: not the split of this config's datasets.ml-100k.preprocess settings, "
        f"which is data/processed/ml-100k/{key}"
    )


# ------------------------------------------------------------------ checks when the workflow starts

from semtail import config_schema  # noqa: E402


@pytest.fixture(scope="module")
def schema():
    return config_schema.load_schema(SCHEMA)


def test_text_from_the_command_line_becomes_numbers_where_the_schema_wants_them(demo, schema):
    """`--config seeds=[5]` gives ['5'] (YAML's base loader), `seeds=5` gives 5."""
    config = copy.deepcopy(demo)
    config.update(
        seeds=["5", "07"], evaluation={**demo["evaluation"], "ks": ["10", "20"], "tail_interaction_share": "0.3"}
    )
    config["datasets"]["ml-100k"]["preprocess"].update(threshold="null", n_heldout="50")
    config["hyperparameters"]["posit"].update(lr="0.5", ones_aware="true", adversary="2mlp50")
    config["compute"] = {"device": "cpu", "gpus_per_job": "0"}  # --config 'compute={device: cpu, gpus_per_job: 0}'
    config_schema.check_against_schema(config, schema)
    assert config["compute"] == {"device": "cpu", "gpus_per_job": 0}
    assert config["seeds"] == [5, 7] and config["evaluation"]["ks"] == [10, 20]
    assert config["evaluation"]["tail_interaction_share"] == 0.3
    assert config["datasets"]["ml-100k"]["preprocess"]["threshold"] is None
    assert config["datasets"]["ml-100k"]["preprocess"]["n_heldout"] == 50
    assert (config["hyperparameters"]["posit"]["lr"], config["hyperparameters"]["posit"]["ones_aware"]) == (0.5, True)
    assert config["hyperparameters"]["posit"]["adversary"] == "2mlp50"
    validate(config, SCHEMA)
    one = dict(copy.deepcopy(demo), seeds=5, methods="ease")
    config_schema.check_against_schema(one, schema)
    assert one["seeds"] == [5] and one["methods"] == ["ease"]
    bad = dict(copy.deepcopy(demo), seeds=["x"])
    with pytest.raises(plan.ConfigError, match=r"^config: seeds\[0\]: 'x' is not of type 'integer'"):
        config_schema.check_against_schema(bad, schema)


def test_whole_floats_for_integer_keys_become_integers_everywhere(demo, schema):
    """`ease.batch_size: 64.0` was refused while `evaluation.batch_size: 1024.0` was accepted and,
    a float in the params, reran every evaluation. Both now become the integer, as '64.0' from
    --config does, so the params are those of 64 and 1024."""
    written = copy.deepcopy(demo)
    written["evaluation"]["batch_size"] = 1024.0
    written["evaluation"]["ks"] = [10.0, "20.0"]
    written["hyperparameters"]["ease"]["batch_size"] = 64.0
    written["hyperparameters"]["posit"]["k"] = "100.0"
    written["seeds"] = [0.0, 1]
    written["overrides"] = {"ml-100k": {"ipw": {"epochs": 3.0}}}
    written["tuning"] = {"grids": {"cvar": {"batch_size": [64.0, 128], "lr": [1.0]}}}
    plain = copy.deepcopy(demo)
    plain["evaluation"]["batch_size"] = 1024
    plain["evaluation"]["ks"] = [10, 20]
    plain["hyperparameters"]["ease"]["batch_size"] = 64
    plain["hyperparameters"]["posit"]["k"] = 100
    plain["seeds"] = [0, 1]
    plain["overrides"] = {"ml-100k": {"ipw": {"epochs": 3}}}
    plain["tuning"] = {"grids": {"cvar": {"batch_size": [64, 128], "lr": [1.0]}}}
    for config in (written, plain):
        config_schema.check_against_schema(config, schema)
        plan.check_config(config)
    assert repr(written["evaluation"]) == repr(plain["evaluation"])  # the evaluate rule's params
    assert repr(written["seeds"]) == "[0, 1]"
    for name in ("ease", "posit", "ipw"):
        assert repr(plan.resolve_hyperparameters(written, "ml-100k", name)) == repr(
            plan.resolve_hyperparameters(plain, "ml-100k", name)
        )
    assert [c.name for c in search.candidates(written, "ml-100k", "cvar")] == [
        c.name for c in search.candidates(plain, "ml-100k", "cvar")
    ]
    assert (
        registry.declaration("ease")
        .complete({**demo["hyperparameters"]["ease"], "batch_size": 64.0}, "x")["batch_size"]
        .__class__
        is int
    )
    for key, value, message in [
        (
            "evaluation",
            {**demo["evaluation"], "batch_size": 1024.5},
            "config: evaluation.batch_size: 1024.5 is not of type 'integer'",
        ),
        (
            "hyperparameters",
            {**demo["hyperparameters"], "ease": {**demo["hyperparameters"]["ease"], "batch_size": 64.5}},
            None,
        ),
    ]:
        config = dict(copy.deepcopy(demo), **{key: value})
        if message:
            with pytest.raises(plan.ConfigError, match=re.escape(message)):
                config_schema.check_against_schema(config, schema)
        else:
            config_schema.check_against_schema(config, schema)
            with pytest.raises(plan.ConfigError, match=r"hyperparameters\.ease\.batch_size: 64\.5 is not an integer"):
                plan.check_config(config)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c.update(seed=[0]),
            "config: unknown key 'seed'; did you mean 'seeds'?\n"
            "  keys allowed at the top level: checkpoints, compare, compute, datasets, evaluation, experiment, hyperparameters, methods, model_files, overrides, seeds, tuning, variants",
        ),
        (
            lambda c: c["datasets"]["ml-100k"]["sources"][0].update(sep=";"),
            "config: datasets.ml-100k.sources[0].sep: not allowed here; see the description of 'sep'",
        ),
        (
            lambda c: c["datasets"]["ml-100k"]["preprocess"].update(min_uc=-1),
            "config: datasets.ml-100k.preprocess.min_uc: -1 is less than the minimum of 0",
        ),
        # --config 'seeds=[1180591620717411303424]': past torch's 64-bit seed, refused before any job
        (
            lambda c: c.update(seeds=["1180591620717411303424"]),
            "config: seeds[0]: 1180591620717411303424 is greater than the maximum of 9223372036854775807",
        ),
        (lambda c: c.update(seeds=[0, 2**63]), "config: seeds[1]: 9223372036854775808 is greater than the maximum"),
        (
            lambda c: c.update(tuning={"seed": 2**64}),
            "config: tuning.seed: 18446744073709551616 is greater than the maximum",
        ),
    ],
)
def test_a_schema_problem_is_said_in_a_few_lines(demo, schema, mutate, message):
    config = copy.deepcopy(demo)
    mutate(config)
    with pytest.raises(plan.ConfigError) as error:
        config_schema.check_against_schema(config, schema)
    text = str(error.value)
    assert text.startswith(message) and len(text.splitlines()) <= 4, text


def test_coverage_blocks_larger_than_the_test_users_are_refused(demo):
    config = copy.deepcopy(demo)
    config["evaluation"]["coverage_block_size"] = 120
    with pytest.raises(plan.ConfigError) as error:
        plan.check_config(config)
    assert str(error.value) == (
        "evaluation.coverage_block_size (120) is larger than datasets.ml-100k.preprocess.n_heldout (100), the number "
        "of test users: coverage@k averages over full blocks of test users, and there would be none. Make it at most 100."
    )
    config["evaluation"]["coverage_block_size"] = 100
    plan.check_config(config)


def test_a_threshold_on_a_source_without_ratings_is_refused(demo):
    config = copy.deepcopy(demo)
    config["datasets"]["ml-100k"]["sources"].append(
        {"path": "/data/clicks.csv", "format": "delimited", "sep": ",", "columns": {"user": "who", "item": "what"}}
    )
    validate(config, SCHEMA)
    with pytest.raises(plan.ConfigError) as error:
        plan.check_config(config)
    assert str(error.value) == (
        "datasets.ml-100k.preprocess.threshold is 3.5, but sources[2] (format delimited) has no rating column, so "
        "every row is a positive: set the threshold to null or leave it out"
    )
    del config["datasets"]["ml-100k"]["preprocess"]["threshold"]
    validate(config, SCHEMA)
    plan.check_config(config)


def test_a_delimited_layout_the_download_would_refuse_is_refused_when_planning(demo):
    """Column names without a header line pass the schema; the reader's own check names the key."""
    config = copy.deepcopy(demo)
    source = {"path": "/data/clicks.csv", "format": "delimited", "sep": ",", "header": False}
    config["datasets"]["ml-100k"]["sources"].append({**source, "columns": {"user": "who", "item": 1}})
    validate(config, SCHEMA)
    with pytest.raises(plan.ConfigError) as error:
        plan.check_config(config)
    assert str(error.value).startswith(
        "datasets.ml-100k.sources[2].columns.user: 'who' is a column name, but header is false"
    )


def test_every_run_is_a_target_of_its_own(demo):
    targets = plan.final_targets(demo)
    runs = [
        f"results/ml-100k/{m}/{'seed-independent' if m in ('mostpop', 'ease_closed') else f'seed{s}'}/metrics.json"
        for m in demo["methods"]
        for s in ([None] if m in ("mostpop", "ease_closed") else demo["seeds"])
    ]
    assert [t for t in targets if t.endswith("metrics.json")] == runs


def test_a_dataset_that_is_not_configured_is_a_pattern_of_its_own():
    import re

    pattern = re.compile(rf"results/(?P<d>{plan.unconfigured_dataset_pattern(['ml-100k', 'ml-20m'])})/summary.md")
    assert pattern.fullmatch("results/netflix/summary.md").group("d") == "netflix"
    assert pattern.fullmatch("results/ml-100k-min50/summary.md").group("d") == "ml-100k-min50"
    assert (
        pattern.fullmatch("results/ml-100k/summary.md") is None
        and pattern.fullmatch("results/ml-20m/summary.md") is None
    )


def dry_run(tmp_path, *args, config=None):
    return dry_run_in(tmp_path, config or load("config.yaml"), *args)


def test_snakemake_says_what_is_wrong_in_a_few_lines(tmp_path, demo):
    config = copy.deepcopy(demo)
    config["seed"] = config.pop("seeds")
    done = dry_run(tmp_path, config=config)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "config: unknown key 'seed'; did you mean 'seeds'?" in output
    assert len(output.splitlines()) < 20, output

    config = copy.deepcopy(demo)
    config["evaluation"]["coverage_block_size"] = 500
    done = dry_run(tmp_path, config=config)
    assert done.returncode != 0 and "evaluation.coverage_block_size (500) is larger than" in done.stdout + done.stderr


def test_a_target_of_a_dataset_not_in_the_config_says_so(tmp_path):
    done = dry_run(tmp_path, "results/ml-20m/summary.md")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "results/ml-20m/summary.md: 'ml-20m' is not in datasets: of the config (configured: ml-100k)" in output
    assert "No rule to produce" not in output


def test_seeds_from_the_command_line(tmp_path):
    done = dry_run(tmp_path, "--config", "seeds=[5]", "--quiet=host")  # each job's block, with its output
    assert done.returncode == 0, done.stdout + done.stderr
    models = set(re.findall(r"results/ml-100k/\w+/seed(\d+)/model.pt", done.stdout))
    assert models == {"5"}


def test_a_typo_in_a_hyperparameter_is_named_with_the_nearest_known_one(demo):
    config = copy.deepcopy(demo)
    config["hyperparameters"]["ease"]["epochs_"] = 3
    with pytest.raises(
        plan.ConfigError,
        match=r"^hyperparameters.ease: \['epochs_'\] are not hyperparameters of ease; did you mean 'epochs'\?",
    ):
        plan.check_config(config)
