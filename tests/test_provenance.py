"""code_version: what Snakemake's params trigger sees of the imported library code."""

import textwrap

import pytest

from semtail import provenance


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A private copy of a small semtail-like package tree, to edit without touching the real one."""
    root = tmp_path / "semtail"
    (root / "models").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "training.py": "from semtail import files\n\ndef loop():\n    return 1\n",
        "files.py": "def write():\n    return 2\n",
        "evaluate.py": "from .metrics import ndcg\n",
        "metrics.py": "def ndcg():\n    return 3\n",
        "models/__init__.py": "",
        "models/posit.py": "from semtail.training import loop\n\ndef fit():\n    return loop()\n",
        "models/ipw.py": "from .. import training\n\ndef fit():\n    return training.loop()\n",
        "models/mostpop.py": "import numpy\n\ndef fit():\n    return 0\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
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
    assert provenance.module_closure("semtail.models.mostpop") == ("semtail", "semtail.models", "semtail.models.mostpop")
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
            # A comment that changes nothing.
            from semtail.training import (
                loop,
            )


            def fit():
                return loop()  # still the same
            """
        ),
    )
    assert provenance.code_version("posit") == before


def test_a_missing_module_is_a_clear_error(package_copy):
    with pytest.raises(FileNotFoundError, match="semtail.models.nosuch"):
        provenance.code_version("nosuch")


def test_the_real_stages_resolve():
    provenance.module_closure.cache_clear()
    for stage, entry in provenance.STAGE_ENTRY_MODULES.items():
        try:
            provenance.module_path(entry)
        except FileNotFoundError:
            pytest.fail(f"stage {stage}: entry module {entry} does not exist")
        assert len(provenance.code_version(stage)) == 16


def test_environment_names_versions():
    env = provenance.environment()
    assert env["python"].count(".") == 2
    assert "semtail" in env and "numpy" in env
