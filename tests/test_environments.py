"""The conda environments in envs/ agree with the Python requirements in pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in requirements}


def env_requirements(env_file: Path) -> dict[str, Requirement]:
    spec = yaml.safe_load(env_file.read_text())
    found = {}
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict):
            for pip_line in dependency.get("pip", []):
                requirement = Requirement(pip_line)
                found[requirement.name.lower()] = requirement
            continue
        name, _, version = re.match(r"^([A-Za-z0-9_.-]+)\s*(([<>=!~]=?)\s*\S+)?$", dependency).group(1, 0, 2)
        name = CONDA_TO_PIP.get(name.lower(), name.lower())
        if name in NOT_PACKAGES:
            continue
        found[name] = Requirement(f"{name}{(version or '').replace(' ', '')}")
    return found


ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


def test_there_are_environments():
    assert {p.stem for p in ENV_FILES} >= {"data", "torch", "plot"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_environment_versions_match_pyproject(env_file):
    required = pyproject_requirements()
    for name, requirement in env_requirements(env_file).items():
        assert name in required, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert requirement.specifier == required[name].specifier, (
            f"{env_file.name}: {name}{requirement.specifier} but pyproject.toml says "
            f"{name}{required[name].specifier}"
        )


def test_every_requirement_is_in_some_environment():
    in_envs = set().union(*(env_requirements(p) for p in ENV_FILES))
    # jsonschema validates the config in the Snakefile, which runs in the driver's environment.
    missing = set(pyproject_requirements()) - in_envs - {"jsonschema"}
    assert not missing, f"pyproject.toml dependencies in no envs/*.yaml: {sorted(missing)}"


def test_every_rule_names_an_existing_environment():
    rules_text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    rule_names = re.findall(r"^(?:rule|checkpoint) (\w+):", rules_text, flags=re.M)
    conda_files = re.findall(r'conda:\n\s+"\.\./(envs/[\w.-]+)"', rules_text)
    assert len(conda_files) == len(rule_names), "every rule declares a conda environment"
    for env in conda_files:
        assert (ROOT / env).is_file(), f"rules refer to missing {env}"
