"""code_version: what Snakemake's params trigger sees of the imported library code."""

import json
import textwrap

import pytest

from semtail import plan, provenance, registry


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A private copy of a small semtail-like package tree and its scripts, to edit without
    touching the real one."""
    root = tmp_path / "semtail"
    (root / "models").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "training.py": "from semtail import files\n\ndef loop():\n    return 1\n",
        "files.py": "def write():\n    return 2\n",
        "evaluate.py": "from .metrics import ndcg\n",
        "metrics.py": "def ndcg():\n    return 3\n",
        "script_io.py": "def run():\n    return 4\n",
        "models/__init__.py": "",
        "models/posit.py": "from semtail.training import loop\n\ndef fit():\n    return loop()\n",
        "models/ipw.py": "from .. import training\n\ndef fit():\n    return training.loop()\n",
        "models/mostpop.py": "import numpy\n\ndef fit():\n    return 0\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    scripts = {
        "train.py": "from semtail.script_io import run\nfrom semtail import models\n",
        "evaluate.py": "from semtail.evaluate import ndcg\n",
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(provenance, "STAGE_SCRIPTS", {"evaluate": "evaluate.py"})
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", root)
    provenance.module_closure.cache_clear()
    yield root
    provenance.module_closure.cache_clear()


def test_closure_follows_absolute_and_relative_imports(package_copy):
    assert provenance.module_closure("semtail.models.posit") == (
        "semtail",
        "semtail.files",
        "semtail.models",
        "semtail.models.posit",
        "semtail.training",
    )
    assert "semtail.training" in provenance.module_closure("semtail.models.ipw")
    assert provenance.module_closure("semtail.models.mostpop") == (
        "semtail",
        "semtail.models",
        "semtail.models.mostpop",
    )
    assert "semtail.metrics" in provenance.module_closure("semtail.evaluate")


def edit(path, text):
    path.write_text(text)
    provenance.module_closure.cache_clear()


def test_a_change_in_an_imported_module_changes_only_its_dependants(package_copy):
    before = {m: provenance.code_version(m) for m in ("posit", "ipw", "mostpop", "evaluate")}
    edit(package_copy / "files.py", "def write():\n    return 20\n")
    after = {m: provenance.code_version(m) for m in before}
    assert after["posit"] != before["posit"] and after["ipw"] != before["ipw"]
    assert after["mostpop"] == before["mostpop"] and after["evaluate"] == before["evaluate"]


def test_a_change_in_a_module_a_script_imports_changes_every_job_of_that_script(package_copy):
    before = {m: provenance.code_version(m) for m in ("posit", "ipw", "mostpop", "evaluate")}
    edit(package_copy / "script_io.py", "def run():\n    return 40\n")
    after = {m: provenance.code_version(m) for m in before}
    assert all(after[m] != before[m] for m in ("posit", "ipw", "mostpop"))
    assert after["evaluate"] == before["evaluate"]  # evaluate.py does not import script_io
    edit(package_copy.parent / "evaluate.py", "from semtail.evaluate import ndcg\nprint(ndcg())\n")
    assert provenance.code_version("evaluate") != before["evaluate"]


def test_a_change_in_a_method_module_changes_that_method_only(package_copy):
    before = {m: provenance.code_version(m) for m in ("posit", "ipw", "mostpop")}
    edit(package_copy / "models/posit.py", "from semtail.training import loop\n\ndef fit():\n    return 2 * loop()\n")
    after = {m: provenance.code_version(m) for m in before}
    assert after["posit"] != before["posit"]
    assert after["ipw"] == before["ipw"] and after["mostpop"] == before["mostpop"]


def test_comments_and_formatting_do_not_change_the_version(package_copy):
    before = provenance.code_version("posit")
    edit(
        package_copy / "models/posit.py",
        textwrap.dedent(
            """\
            '''A module docstring, and a comment, change nothing.'''
            # A comment.
            from semtail.training import (
                loop,
            )


            def fit():
                "Nor does a function's docstring."
                return loop()  # still the same
            """
        ),
    )
    assert provenance.code_version("posit") == before


def test_a_declaration_is_left_out_of_the_version(package_copy):
    """What in a DECLARATION changes results reaches jobs as params; a label or colour reruns nothing."""
    module = package_copy / "models/posit.py"
    edit(module, 'DECLARATION = {"figures": {"colour": "#d55e00"}}\n' + module.read_text())
    before = provenance.code_version("posit")
    edit(module, module.read_text().replace("#d55e00", "#000000"))
    assert provenance.code_version("posit") == before
    edit(module, module.read_text() + "\nNOT_A_DECLARATION = 1\n")
    assert provenance.code_version("posit") != before


def test_a_missing_module_is_a_clear_error(package_copy):
    with pytest.raises(FileNotFoundError, match="semtail.models.nosuch"):
        provenance.code_version("nosuch")


def test_a_string_that_is_not_a_docstring_counts(package_copy):
    before = provenance.code_version("mostpop")
    edit(package_copy / "models/mostpop.py", "import numpy\n\ndef fit():\n    x = 'a'\n    return 0\n")
    assert provenance.code_version("mostpop") != before


@pytest.fixture
def kept_versions(package_copy, tmp_path, monkeypatch):
    """Code versions kept in a file, as in a Snakemake call; returns a function that starts the
    next call (a new process: only the file is left of the last one) and the file."""
    monkeypatch.setattr(provenance, "_kept_versions", None)
    folder = tmp_path / "workdir" / ".snakemake" / "semtail"

    def next_call():
        provenance.module_closure.cache_clear()
        provenance.keep_code_versions_in(folder)

    next_call()
    return next_call, folder / "code_versions.json"


def test_kept_code_versions_are_the_computed_ones_and_are_read_back(kept_versions, monkeypatch):
    next_call, file = kept_versions
    computed = {m: provenance.hash_of_code(m) for m in ("posit", "mostpop", "evaluate")}
    assert {m: provenance.code_version(m) for m in computed} == computed
    stored = json.loads(file.read_text())
    assert stored["versions"] == {
        "posit train.py": computed["posit"],
        "mostpop train.py": computed["mostpop"],
        "evaluate train.py": computed["evaluate"],
    }

    next_call()
    monkeypatch.setattr(provenance, "hash_of_code", lambda *args: pytest.fail(f"computed again: {args}"))
    assert {m: provenance.code_version(m) for m in computed} == computed


def test_an_edit_of_any_source_makes_every_kept_version_be_computed_again(kept_versions, package_copy):
    next_call, file = kept_versions
    before = {m: provenance.code_version(m) for m in ("posit", "ipw", "mostpop")}
    edit(package_copy / "models/posit.py", "from semtail.training import loop\n\ndef fit():\n    return 2 * loop()\n")
    next_call()
    assert json.loads(file.read_text())["sources"] != provenance._kept_versions.sources
    after = {m: provenance.code_version(m) for m in before}
    assert after["posit"] != before["posit"] and after["posit"] == provenance.hash_of_code("posit")
    assert after["ipw"] == before["ipw"] and after["mostpop"] == before["mostpop"]
    assert set(json.loads(file.read_text())["versions"]) == {"posit train.py", "ipw train.py", "mostpop train.py"}
    # a comment changes the bytes, not the version: computed again, to the same value
    edit(package_copy / "models/ipw.py", "# a comment\n" + (package_copy / "models/ipw.py").read_text())
    next_call()
    assert provenance._kept_versions.versions == {}
    assert provenance.code_version("ipw") == before["ipw"]


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"sources": 3}', '{"versions": {"posit train.py": "x"}}'])
def test_a_file_that_is_not_of_these_sources_is_not_read(kept_versions, text):
    next_call, file = kept_versions
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    next_call()
    assert provenance.code_version("posit") == provenance.hash_of_code("posit")
    assert json.loads(file.read_text())["versions"] == {"posit train.py": provenance.hash_of_code("posit")}


def test_a_folder_that_cannot_be_written_loses_only_the_keeping(package_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_kept_versions", None)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    provenance.keep_code_versions_in(blocker / "semtail")
    assert provenance.code_version("posit") == provenance.hash_of_code("posit")
    assert blocker.read_text() == ""


def test_the_canonical_tree_ignores_positions_and_empty_fields():
    """ast.dump's text differs between Python versions (3.12 adds type_params=[] to every
    function); the canonical form leaves out what is empty, so it does not."""
    text = provenance.canonical_code("def f(a, *, b=1):\n    return a + b\n")
    assert text == (
        "Module(body=[FunctionDef(name='f',args=arguments(args=[arg(arg='a')],kwonlyargs=[arg(arg='b')],"
        "kw_defaults=[Constant(value=1)]),body=[Return(value=BinOp(left=Name(id='a',ctx=Load()),"
        "op=Add(),right=Name(id='b',ctx=Load())))])])"
    )


# The real package: which shared modules each job's code version covers. Snakemake cannot see
# these imports; if one is missing here, editing that module would not rerun the jobs it changes.
METHODS = registry.methods()


def real_modules(name: str) -> set[str]:
    provenance.module_closure.cache_clear()
    return {module.removeprefix("semtail.") for module in provenance.code_files(name)[1]}


@pytest.mark.parametrize("method", list(METHODS))
def test_the_real_training_jobs_cover_their_imports(method):
    modules = real_modules(method)
    assert {
        f"models.{method}",
        "models",
        "models.base",
        "train_job",
        "registry",
        "modelfile",
        "script_io",
        "device",
    } <= modules
    assert ("training" in modules) == (METHODS[method].training == "sgd")
    assert ("models.on_base" in modules) == (METHODS[method].training == "on_base")
    assert ("models.itemitem" in modules) == (method != "mostpop")
    assert not {f"models.{other}" for other in METHODS if other != method} & modules


def test_the_training_loop_does_not_reach_the_registry():
    """Imports run one way: methods use the loop, the loop never the package that lists methods."""
    for module in ("training", "models.base", "models.itemitem"):
        assert "registry" not in {m.removeprefix("semtail.") for m in provenance.module_closure(f"semtail.{module}")}


def test_the_real_stages_cover_their_imports():
    expected = {
        "download": {"datasets.sources", "datasets.formats", "script_io"},
        "preprocess": {"datasets.preprocess", "datasets.split", "datasets.formats", "script_io"},
        "evaluate": {"evaluate", "metrics", "modelfile", "registry", "models.base", "device", "script_io"},
        "aggregate": {"tables", "significance", "flags", "script_io"},
        "plot": {"figures", "run_metrics", "registry", "script_io"},
        "plot_weight_landscape": {"figures", "script_io"},
        "plot_adversary": {"figures", "tables", "run_metrics", "registry", "script_io"},
        "select_hyperparameters": {"selection", "files", "script_io"},
        "tuning_table": {"selection", "tables", "script_io"},
        "resources_table": {"resource_check", "files", "script_io"},
    }
    assert set(expected) == set(provenance.STAGE_SCRIPTS)
    for stage, modules in expected.items():
        assert modules <= real_modules(stage), stage
        assert "training" not in real_modules(stage), stage
        assert len(provenance.code_version(stage)) == 16
    # The selection's jobs do not rerun when the planning (targets, checks, resources) changes.
    for stage in ("select_hyperparameters", "tuning_table"):
        assert not {"search", "plan", "job_resources", "registry"} & real_modules(stage), stage


def test_a_search_candidate_covers_its_method_and_the_validation_scoring():
    _, modules = provenance.code_files("posit", provenance.CANDIDATE_SCRIPT)
    names = {m.removeprefix("semtail.") for m in modules}
    assert {"models.posit", "training", "candidate", "evaluate", "metrics"} <= names
    assert "models.ipw" not in names
    assert provenance.code_version("posit", provenance.CANDIDATE_SCRIPT) != provenance.code_version("posit")


def test_environment_names_versions():
    import torch

    env = provenance.environment()
    assert env["python"].count(".") == 2
    assert "semtail" in env and "numpy" in env
    assert env["torch_build"] == torch.__version__ and env["cuda"] == torch.version.cuda


def test_a_name_s_code_version_is_its_method_s():
    config = {"variants": {"posit_k7": {"method": "posit", "k": 7}}}
    assert plan.method_code_version(config, "posit_k7") == provenance.code_version("posit")
    assert (
        plan.method_code_version(config, "ease") == provenance.code_version("ease") != provenance.code_version("posit")
    )
    candidate = plan.method_code_version(config, "posit_k7", script=provenance.CANDIDATE_SCRIPT)
    assert (
        candidate == provenance.code_version("posit", provenance.CANDIDATE_SCRIPT) != provenance.code_version("posit")
    )
