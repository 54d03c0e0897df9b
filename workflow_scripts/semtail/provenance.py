"""Where a result came from: code versions that Snakemake can see, and the software environment."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE_NAME = PACKAGE_ROOT.name

# The module each workflow stage starts from. A method's training starts from semtail.models.<method>.
STAGE_ENTRY_MODULES = {
    "download": "semtail.datasets.sources",
    "preprocess": "semtail.datasets.preprocess",
    "evaluate": "semtail.evaluate",
    "aggregate": "semtail.tables",
    "plot": "semtail.figures",
}


def module_path(module: str) -> Path:
    """The source file of a semtail module, found without importing it."""
    parts = module.split(".")
    if parts[0] != PACKAGE_NAME:
        raise ValueError(f"{module!r} is not a module of the {PACKAGE_NAME} package")
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"module {module!r} has no source file under {PACKAGE_ROOT}")


def _imported_modules(module: str, path: Path) -> set[str]:
    """The semtail modules that `module` imports, directly, read from its syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE_NAME or name.startswith(PACKAGE_NAME + "."):
                found.add(name)
    resolved = set()
    for name in found:
        try:
            module_path(name)
            resolved.add(name)
        except FileNotFoundError:
            pass  # `from semtail.x import function`: the function is not a module
    return resolved


@cache
def module_closure(entry: str) -> tuple[str, ...]:
    """`entry` and every semtail module it imports, transitively, with their parent packages."""
    seen: set[str] = set()
    pending = [entry]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        pending.extend(_imported_modules(module, module_path(module)))
    return tuple(sorted(seen))


def code_version(stage_or_method: str) -> str:
    """A short hash of the code behind a stage or a method's training, for a Snakemake `params:` value.

    Snakemake's `code` trigger sees only the script a rule runs, not what it imports. Hashing the
    syntax tree of every imported semtail module makes a change to, say, models/posit.py rerun
    POSIT's jobs and nothing else, while edits to comments or formatting rerun nothing.
    """
    entry = STAGE_ENTRY_MODULES.get(stage_or_method, f"{PACKAGE_NAME}.models.{stage_or_method}")
    digest = hashlib.sha256()
    for module in module_closure(entry):
        tree = ast.parse(module_path(module).read_text())
        digest.update(module.encode())
        digest.update(ast.dump(tree).encode())
    return digest.hexdigest()[:16]


def environment() -> dict:
    """Versions of the software that produced a result."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("numpy", "scipy", "pandas", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    from semtail import __version__

    versions["semtail"] = __version__
    return versions
