"""The registry: methods are the modules of models/ that declare themselves; a declaration is read
without importing the module and checked, naming the file and key; hyperparameters are checked
against it. And the worked example of docs/adding_a_method.md, run as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semtail import registry

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs/adding_a_method.md"


def test_the_methods_are_the_modules_that_declare_one():
    modules = {path.stem for path in registry.MODELS.glob("*.py")}
    assert set(registry.names()) < modules
    assert {"base", "itemitem", "on_base", "synthetic", "__init__"} & set(registry.names()) == set()
    assert registry.names() == sorted(registry.names())
    assert {"ease", "posit", "causal", "post"} <= set(registry.names())


def test_declarations_are_read_without_importing_torch():
    code = "import sys; from semtail import plan, registry; registry.methods(); print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "workflow_scripts", check=True
    )
    assert done.stdout.strip() == "False"


def test_training_kinds_add_their_hyperparameters():
    loop = list(registry.training_loop_hyperparameters())
    assert loop == ["lr", "wd", "batch_size", "epochs", "patience", "drop_last"]
    assert list(registry.declaration("ipw").hyperparameters) == [*loop, "lam", "alpha"]
    assert list(registry.declaration("post").hyperparameters) == ["base", "gamma"]
    assert list(registry.declaration("ease_closed").hyperparameters) == ["l2"]
    assert registry.declaration("ipw").defaults() == {"epochs": 50, "patience": 10, "drop_last": True, "lam": 1.0}


@pytest.mark.parametrize(
    "spec, value, problem",
    [
        ({"type": "number"}, True, "True is not a finite number"),
        ({"type": "number"}, float("nan"), "nan is not a finite number"),
        ({"type": "integer"}, 2.5, "2.5 is not an integer"),
        ({"type": "integer"}, float("inf"), "inf is not an integer"),
        ({"type": "boolean"}, 1, "1 is not a boolean"),
        ({"type": "string", "enum": ["a", "b"]}, "c", "'c' is not one of a, b"),
        ({"type": "integer", "minimum": 1}, 0, "0 must be at least 1"),
        ({"type": "number", "exclusiveMinimum": 0}, 0, "0 must be greater than 0"),
        ({"type": "number", "maximum": 1}, 1.5, "1.5 must be at most 1"),
        ({"type": "number", "exclusiveMaximum": 1}, 1, "1 must be less than 1"),
        ({"type": "string", "pattern": "^x+$"}, "xy", "'xy' does not match ^x+$"),
    ],
)
def test_value_problems_in_words(spec, value, problem):
    assert registry.value_problem(spec, value).startswith(problem)


def test_values_that_fit_have_no_problem():
    assert registry.value_problem({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, 1) is None
    assert registry.value_problem({"type": "integer", "minimum": 1}, 1) is None
    assert registry.value_problem({"type": "integer", "minimum": 1}, 64.0) is None  # `complete` makes it 64
    assert registry.value_problem({"type": "string", "enum": ["a"], "pattern": "^a$"}, "a") is None
    assert registry.value_problem({"type": "boolean"}, False) is None


def test_describe_writes_each_bound_as_its_operator():
    lines = registry.describe().splitlines()
    posit = lines.index("posit (POSIT; training: sgd; state: U items x items)")
    described = {line.split(":")[0].strip(): line for line in lines[posit + 1 : lines.index("", posit)]}
    assert described["signal_momentum"].startswith("    signal_momentum: number (>= 0; < 1; default 0.9)  momentum m")
    assert described["lam"].startswith("    lam: number (> 0; default 1.0)")
    cvar = lines.index("cvar (CVaR; training: sgd; state: U items x items)")
    assert lines[cvar + 8].startswith("    beta: number (> 0; <= 1)  β")


def test_complete_fills_defaults_in_declared_order_and_checks_constraints():
    rerank = registry.declaration("rerank")
    assert list(rerank.complete({"low": 0.1, "high": 0.3, "base": "ease"}, "here")) == [
        "base",
        "high",
        "low",
        "thresholds",
    ]
    with pytest.raises(registry.HyperparameterError, match=r"here: high \(0.1\) must be greater than low \(0.3\)"):
        rerank.complete({"base": "ease", "high": 0.1, "low": 0.3}, "here")
    posit = registry.declaration("posit")
    assert (
        posit.complete(
            {"lr": 1.0, "wd": 0.0, "batch_size": 8, "alr": 0.1, "nstd": 1.0, "adversary": "linear", "signal": "recall"},
            "p",
        )["ties"]
        == "topk"
    )


def write_module(folder: Path, name: str, declaration: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(f"import torch\n\nDECLARATION = {declaration}\n\n\ndef fit():\n    pass\n")
    return path


GOOD = """{
    "training": "closed_form",
    "hyperparameters": {"shrink": {"type": "number", "minimum": 0, "default": 1.0}},
    "state": {"S": ["items", "items"]},
    "item_item": "S",
    "resources": {"gpu": False},
    "figures": {"label": "X", "colour": "#123456", "marker": "o"},
}"""


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.replace('"closed_form"', '"closed"'),
            "DECLARATION.training: 'closed' is not one of sgd, closed_form, on_base",
        ),
        (
            lambda d: d.replace('"minimum": 0, "default": 1.0', '"minimum": 0, "default": -1.0'),
            r"hyperparameters.shrink.default: -1.0 must be at least 0",
        ),
        (lambda d: d.replace('"type": "number", ', ""), "hyperparameters.shrink: needs a `type`"),
        (lambda d: d.replace('"item_item": "S"', '"item_item": "T"'), "item_item: 'T' is not an items × items tensor"),
        (lambda d: d.replace('["items", "items"]', '["items", "users"]'), r"state.S: a shape is a list of items"),
        (lambda d: d.replace('"#123456"', '"blue"'), "figures.colour: 'blue' is not a colour"),
        (
            lambda d: d.replace('"gpu": False', '"gpu": False, "memory": {"dense_matrices": 2}'),
            "'dense_matrices' is not one of dense",
        ),
        (lambda d: d.replace('"training"', '"trainer"'), r"missing \['training'\]; unknown \['trainer'\]"),
        (
            lambda d: d.replace('"minimum": 0,', '"minimun": 0,'),
            r"hyperparameters.shrink: unknown \['minimun'\]; did you mean 'minimum'\?",
        ),
        (
            lambda d: d.replace('"figures"', '"figure"'),
            r"DECLARATION: missing \['figures'\]; unknown \['figure'\]; did you mean 'figures'\?",
        ),
        (
            lambda d: d.replace('"gpu": False', '"gpu": False, "runtime": {"sparse_passes": -1}'),
            r"resources.runtime.sparse_passes: must be a number of at least 0",
        ),
        (lambda d: d.replace('"closed_form"', "KIND"), "must be a literal"),
        (
            lambda d: d.replace('"closed_form"', '"sgd"').replace('"shrink"', '"lr"'),
            r"\['lr'\] come with training 'sgd'",
        ),
    ],
)
def test_declaration_errors_name_the_file_and_key(tmp_path, change, message):
    path = write_module(tmp_path, "mine", change(GOOD))
    with pytest.raises(registry.DeclarationError, match=message) as error:
        registry.read_declaration(path)
    assert str(path) in str(error.value)


def test_a_folder_of_methods(tmp_path):
    write_module(tmp_path, "mine", GOOD)
    (tmp_path / "helpers.py").write_text("def helper():\n    return 1\n")
    write_module(tmp_path, "_private", GOOD)
    methods = registry.methods(tmp_path)
    assert list(methods) == ["mine"]
    assert methods["mine"].defaults() == {"shrink": 1.0} and methods["mine"].item_item == "S"
    write_module(tmp_path, "Bad-Name", GOOD)
    registry.methods.cache_clear()
    with pytest.raises(registry.DeclarationError, match="must match"):
        registry.methods(tmp_path)
    registry.methods.cache_clear()


def guide_module() -> str:
    """The module that docs/adding_a_method.md tells a newcomer to save, as written there."""
    text = GUIDE.read_text()
    section = text.split("## 1. The module", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# The guide's example config, on its own: one small dataset of the user's and the guide's method
# (METHOD, filled in) with rerank on it as a variant. Not config.yaml, which the user edits.
GUIDE_CONFIG = """
seeds: [0]
compute: {device: cpu, gpus_per_job: 0}
datasets:
  shop:
    sources: [{path: /data/shop.csv, format: delimited, sep: ",", header: false, columns: {user: 0, item: 1}}]
    preprocess: {threshold: null, min_uc: 5, min_sc: 0, n_heldout: 10, seed: 1, test_prop: 0.2}
methods: [METHOD, rerank_knn]
hyperparameters:
  METHOD: {shrink: 10.0}
variants:
  rerank_knn: {method: rerank, base: METHOD, high: 0.2, low: 0.15}
evaluation: {ks: [10, 20], coverage_block_size: 10, tail_interaction_share: 0.2, batch_size: 64}
"""


def unused_method_name(models: Path, wanted: str = "guide_example") -> str:
    """A method name no module in `models` has, so that a method the user added (the guide's own
    `itemknn`, say) is neither replaced nor mistaken for the example."""
    name, number = wanted, 1
    while (models / f"{name}.py").exists():
        name, number = f"{wanted}{number}", number + 1
    return name


def test_the_guide_s_worked_example_runs_as_written(tmp_path):
    """In a copy of the package with the guide's module added (under a name of its own): it is
    listed, a config with it (and rerank on it) passes the checks, and it trains, with scores
    equal to a numpy computation of its formula. The copy also holds a user's own `itemknn`, as the
    guide invites one to add, which the example leaves alone."""
    package = tmp_path / "workflow_scripts"
    shutil.copytree(ROOT / "workflow_scripts", package, ignore=shutil.ignore_patterns("__pycache__"))
    users_own = package / "semtail/models/itemknn.py"
    if not users_own.exists():
        users_own.write_text(guide_module().replace('"label": "ItemKNN"', '"label": "My ItemKNN"'))
    users_label = registry.read_declaration(users_own).label
    name = unused_method_name(package / "semtail/models")
    (package / f"semtail/models/{name}.py").write_text(guide_module())
    (tmp_path / "config.yaml").write_text(GUIDE_CONFIG.replace("METHOD", name))
    script = textwrap.dedent(
        f"""
        import copy, numpy as np, torch, yaml
        from semtail import config_schema, plan, registry
        from semtail.models.synthetic import training_data
        from semtail.registry import method_module
        from semtail.models.base import TrainingRun

        name = {name!r}
        assert name in registry.names() and registry.declaration(name).label == "ItemKNN"
        assert registry.declaration("itemknn").label == {users_label!r}
        config = yaml.safe_load(open({str(tmp_path / "config.yaml")!r}))
        config_schema.check_against_schema(config, config_schema.load_schema({str(ROOT / "schemas/config.schema.yaml")!r}))
        plan.check_config(config)
        assert plan.resolve_hyperparameters(config, "shop", name) == {{"shrink": 10.0}}
        assert plan.train_inputs(config, "shop", "rerank_knn", 0)["base_model"].endswith(f"{{name}}/seed0/model.pt")
        bad = copy.deepcopy(config)
        bad["hyperparameters"][name] = {{"shrnk": 1.0}}
        try:
            plan.check_config(bad)
            raise SystemExit("a typo passed")
        except plan.ConfigError as error:
            assert f"hyperparameters.{{name}}: ['shrnk']" in str(error), error

        data = training_data(60, 12, 4, 10, seed=1)
        module = method_module(name)
        fitted = module.fit(data, {{"shrink": 10.0}}, TrainingRun("toy", name, 0))
        X = data.train.toarray().astype(np.float64)
        gram = X.T @ X
        norms = np.sqrt(np.diag(gram))
        S = gram / (np.outer(norms, norms) + 10.0)
        np.fill_diagonal(S, 0.0)
        fold_in = torch.from_numpy(data.validation_tr.toarray())
        scores = module.scorer(fitted.state, {{"shrink": 10.0}}, torch.device("cpu"))(fold_in)
        np.testing.assert_allclose(scores.numpy(), fold_in.double().numpy() @ S, rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=package, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


def test_the_guide_s_example_takes_a_name_no_method_has(tmp_path):
    (tmp_path / "guide_example.py").write_text("")
    (tmp_path / "guide_example1.py").write_text("")
    assert unused_method_name(tmp_path) == "guide_example2"
    assert unused_method_name(tmp_path, "itemknn") == "itemknn"
