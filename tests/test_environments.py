"""The conda environments in envs/ agree with the Python requirements in pyproject.toml, and the exact
pins beside them (envs/requirements.lock.txt, envs/*.lock.yaml) with both and with what is installed."""

import importlib.metadata
import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


ENV_FILES = sorted(p for p in (ROOT / "envs").glob("*.yaml") if not p.name.endswith(".lock.yaml"))
PIP_LOCK = ROOT / "envs/requirements.lock.txt"


def test_there_are_environments():
    assert {p.stem for p in ENV_FILES} >= {"data", "torch", "plot"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_environment_versions_match_pyproject(env_file):
    required = pyproject_requirements()
    for name, requirement in env_requirements(env_file).items():
        assert name in required, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert requirement.specifier == required[name].specifier, (
            f"{env_file.name}: {name}{requirement.specifier} but pyproject.toml says {name}{required[name].specifier}"
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


# ---------------------------------------------------------------------------------------- the pins


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in PIP_LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [specifier] = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def all_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(line) for line in lines]


def test_every_requirement_is_pinned_within_its_range():
    pins = pip_pins()
    for requirement in all_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not pinned in {PIP_LOCK.name}: run tools/pin_environments.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement}"
        )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_each_environment_has_exact_pins_of_the_same_packages(env_file):
    lock_file = env_file.with_name(f"{env_file.stem}.lock.yaml")
    assert lock_file.is_file(), f"{lock_file.name} is missing: run tools/pin_environments.py"
    loose, locked = env_requirements(env_file), env_requirements(lock_file)
    assert set(locked) == set(loose), f"{lock_file.name} pins {sorted(locked)}, {env_file.name} lists {sorted(loose)}"
    pins = pip_pins()
    for name, requirement in locked.items():
        [specifier] = requirement.specifier
        assert specifier.operator == "==", f"{lock_file.name}: {requirement} is not an exact pin"
        assert loose[name].specifier.contains(specifier.version, prereleases=True), (
            f"{lock_file.name}: {requirement} is outside {loose[name]}"
        )
        assert specifier.version == pins[canonicalize_name(name)], (
            f"{lock_file.name}: {requirement}, {PIP_LOCK.name}: {pins[canonicalize_name(name)]}"
        )
    python = [
        d
        for d in yaml.safe_load(lock_file.read_text())["dependencies"]
        if isinstance(d, str) and d.startswith("python")
    ]
    assert python and re.fullmatch(r"python==3\.\d+\.\d+", python[0]), python


@pytest.mark.skipif(
    os.environ.get("PIN") == "no",
    reason="PIN=no installs the newest versions within pyproject.toml's ranges, to refresh the pins from "
    '(docs/running.md, "Pinned environments")',
)
def test_the_installed_packages_are_the_pinned_ones():
    """What the tests run with is what the pins say (workflow.sh installs with them as constraints)."""
    pins = pip_pins()
    differ = []
    for requirement in all_requirements():
        name = canonicalize_name(requirement.name)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra that this environment does without
        if installed != pins[name]:
            differ.append(f"{name} {installed} installed, {pins[name]} pinned")
    assert not differ, (
        f'{"; ".join(differ)}. Install the pins (pip install -c envs/requirements.lock.txt -e ".[workflow,test]"), '
        "or, having tested the installed versions, refresh the pins: python tools/pin_environments.py"
    )


def pin_tool():
    spec = importlib.util.spec_from_file_location("pin_environments", ROOT / "tools/pin_environments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lock_file", [PIP_LOCK, ROOT / "envs/data.lock.yaml"], ids=lambda p: p.name)
def test_the_pin_check_compares_the_packages_not_the_interpreter(lock_file):
    """--check on another interpreter than the one that wrote the pins: only a package's version counts."""
    written = lock_file.read_text()
    elsewhere = re.sub(r"\(Python 3\.\d+\.\d+, linux\)", "(Python 3.99.0, darwin)", written)
    elsewhere = re.sub(r"^- python==3\.\d+\.\d+$", "- python==3.99.0", elsewhere, flags=re.M)
    assert elsewhere != written
    [package_line] = [line for line in written.splitlines() if re.fullmatch(r"-? ?numpy==\S+", line)]
    bumped = written.replace(package_line, package_line + ".1")
    tool = pin_tool()
    assert not tool.pins_differ(written, elsewhere)
    assert tool.pins_differ(written, bumped) and tool.pins_differ(elsewhere, bumped)
    assert tool.pins_differ(None, written)
