"""Write the exact pins beside the lower bounds, from the Python environment this runs in.

    .venv/bin/python tools/pin_environments.py           # write envs/requirements.lock.txt and envs/*.lock.yaml
    .venv/bin/python tools/pin_environments.py --check   # exit 1, naming the files, if a package pin would change

envs/requirements.lock.txt pins every distribution installed here (name==version) but torch's GPU
runtime wheels (a CPU or a CUDA build of the same torch version both satisfy the pins), for
`pip install -c envs/requirements.lock.txt -e ".[workflow,test]"` (workflow.sh does this).
envs/<name>.lock.yaml is envs/<name>.yaml with each package pinned to the version installed here, and
Python to this interpreter's version. `--check` compares the package pins only: the interpreter's
version (in the headers, and a conda environment's python pin) may differ from the one that wrote
them. Refreshing: docs/running.md, "Pinned environments".
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
PIP_LOCK = ENVS / "requirements.lock.txt"
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PINNED = {"pip"}
# torch's GPU runtime wheels: which ones (if any) come with torch depends on the build the index
# serves (CPU or CUDA), so they are left to torch's own requirements rather than pinned.
ACCELERATOR_RUNTIME = re.compile(r"^(nvidia-|triton$|cuda-)")
PROJECT = "semtail"
CONDA_SPEC = re.compile(r"^([A-Za-z0-9_.-]+)\s*(?:[<>=!~]=?.*)?$")
# The lines of a lock file that follow the interpreter rather than the packages: the header comments
# and a conda environment's `- python==3.x.y`.
INTERPRETER_LINE = re.compile(r"^\s*(#|- python==)")


def installed_versions() -> dict[str, str]:
    """Every distribution installed in this environment but the project itself, by canonical name."""
    versions = {}
    for distribution in importlib.metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        if name != PROJECT and not ACCELERATOR_RUNTIME.match(name):
            versions[name] = distribution.version
    return dict(sorted(versions.items()))


def pip_lock_text(versions: dict[str, str]) -> str:
    header = (
        "# Exact versions of every package of the environment the test suite passed in\n"
        f"# (Python {platform.python_version()}, {sys.platform}), written by tools/pin_environments.py.\n"
        '# pip install -c envs/requirements.lock.txt -e ".[workflow,test]"  (workflow.sh does this)\n'
    )
    return header + "".join(f"{name}=={version}\n" for name, version in versions.items())


def conda_lock(env_file: Path, versions: dict[str, str]) -> dict:
    """env_file's environment with each package pinned (conda's `==`) to the installed version."""
    spec = yaml.safe_load(env_file.read_text())
    pinned = []
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict):
            pip_lines = [
                f"{Requirement(line).name}=={versions[canonicalize_name(Requirement(line).name)]}"
                for line in dependency["pip"]
            ]
            pinned.append({"pip": pip_lines})
            continue
        name = CONDA_SPEC.match(dependency).group(1)
        if name == "python":
            pinned.append(f"python=={platform.python_version()}")
        elif name in NOT_PINNED:
            pinned.append(name)
        else:
            pinned.append(f"{name}=={versions[canonicalize_name(CONDA_TO_PIP.get(name, name))]}")
    return {"channels": spec["channels"], "dependencies": pinned}


def conda_lock_text(env_file: Path, versions: dict[str, str]) -> str:
    header = (
        f"# {env_file.name} with exact versions: those of envs/requirements.lock.txt, written by\n"
        "# tools/pin_environments.py. Not built with conda by the project's tests (docs/running.md).\n"
    )
    return header + yaml.safe_dump(conda_lock(env_file, versions), sort_keys=False)


def lock_files() -> dict[Path, str]:
    versions = installed_versions()
    files = {PIP_LOCK: pip_lock_text(versions)}
    for env_file in sorted(ENVS.glob("*.yaml")):
        if not env_file.name.endswith(".lock.yaml"):
            files[env_file.with_name(f"{env_file.stem}.lock.yaml")] = conda_lock_text(env_file, versions)
    return files


def package_lines(text: str) -> list[str]:
    """A lock file's lines but those that follow the interpreter (INTERPRETER_LINE)."""
    return [line for line in text.splitlines() if not INTERPRETER_LINE.match(line)]


def pins_differ(current: str | None, new: str) -> bool:
    """Whether a lock file's text `current` pins other packages, versions or channels than `new`."""
    return current is None or package_lines(current) != package_lines(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only say whether the lock files' package pins would change"
    )
    args = parser.parse_args()
    changed = []
    for path, text in lock_files().items():
        current = path.read_text() if path.is_file() else None
        if args.check:
            if pins_differ(current, text):
                changed.append(path.relative_to(ROOT))
        elif current != text:
            changed.append(path.relative_to(ROOT))
            path.write_text(text)
    if args.check:
        print("up to date" if not changed else f"package pins would change: {', '.join(map(str, changed))}")
        return 1 if changed else 0
    print(f"wrote {', '.join(map(str, changed))}" if changed else "nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
