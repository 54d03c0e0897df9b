"""Where a result came from: code versions that Snakemake can see, and the software environment."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from functools import cache
from pathlib import Path

from semtail.files import sha256, write_text

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE_NAME = PACKAGE_ROOT.name

# The script each workflow stage runs, in the folder above the package. A method's training runs
# train.py with semtail.models.<method>, which the package loads by name, not by an import.
STAGE_SCRIPTS = {
    "download": "download.py",
    "preprocess": "preprocess.py",
    "evaluate": "evaluate.py",
    "aggregate": "aggregate.py",
    "plot": "plot.py",
    "plot_weight_landscape": "plot_weight_landscape.py",
    "plot_adversary": "plot_adversary.py",
    "select_hyperparameters": "select_hyperparameters.py",
    "tuning_table": "tuning_table.py",
    "resources_table": "resources_table.py",
}
TRAIN_SCRIPT = "train.py"
# A method module's declaration of itself (semtail.registry), and the training loop's. It is left
# out of code versions: what in it changes a result (hyperparameter defaults) reaches the jobs as
# params, and the rest (labels, colours, resources, descriptions) changes none.
DECLARATION_NAME = "DECLARATION"
# A hyperparameter search's candidate: a method's training, then scoring of the validation users.
CANDIDATE_SCRIPT = "tune_candidate.py"


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


def script_path(name: str) -> Path:
    path = PACKAGE_ROOT.parent / name
    if not path.is_file():
        raise FileNotFoundError(f"workflow script {name!r} is not in {PACKAGE_ROOT.parent}")
    return path


def _imported_modules(path: Path, package_parts: list[str]) -> set[str]:
    """The semtail modules that the file at `path` imports, directly, read from its syntax tree.
    package_parts: the package a relative import starts from (none for a script)."""
    resolved = set()
    for name in _semtail_names_imported(path.read_text(), tuple(package_parts)):
        try:
            module_path(name)
            resolved.add(name)
        except FileNotFoundError:
            pass  # `from semtail.x import function`: the function is not a module
    return resolved


@cache  # parsed once per source text: Snakemake asks for the code version of most jobs repeatedly
def _semtail_names_imported(source: str, package_parts: tuple[str, ...]) -> frozenset[str]:
    """Every semtail name an import statement of `source` mentions (modules, or names in them)."""
    found: set[str] = set()
    for node in ast.walk(syntax_tree(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = list(package_parts[: len(package_parts) - node.level + 1])
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == PACKAGE_NAME or name.startswith(PACKAGE_NAME + "."))
    return frozenset(found)


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
        path = module_path(module)
        pending.extend(_imported_modules(path, parts if path.name == "__init__.py" else parts[:-1]))
    return tuple(sorted(seen))


def code_files(stage_or_method: str, script: str = TRAIN_SCRIPT) -> tuple[Path, tuple[str, ...]]:
    """The script a stage (or a method's training) runs, and every semtail module behind it.
    `script`: the script that runs a method (train.py, or tune_candidate.py for a search's candidate)."""
    if stage_or_method in STAGE_SCRIPTS:
        script, entries = script_path(STAGE_SCRIPTS[stage_or_method]), set()
    else:
        script, entries = script_path(script), {f"{PACKAGE_NAME}.models.{stage_or_method}"}
    entries |= _imported_modules(script, [])
    modules = sorted({module for entry in entries for module in module_closure(entry)})
    return script, tuple(modules)


def code_version(stage_or_method: str, script: str = TRAIN_SCRIPT) -> str:
    """A short hash of the code behind a stage or a method's training, for a Snakemake `params:` value.

    Snakemake's `code` trigger sees only the script a rule runs, not what it imports. Hashing the
    syntax tree of the script and of every semtail module it imports makes a change to, say,
    models/posit.py rerun POSIT's jobs and nothing else, while edits to comments, docstrings or
    formatting rerun nothing. The hash is the same under every Python version this project supports.
    Within a Snakemake call, also read from and added to a file (keep_code_versions_in).
    """
    if _kept_versions is None:
        return hash_of_code(stage_or_method, script)
    return _kept_versions.get(stage_or_method, script)


def hash_of_code(stage_or_method: str, script: str = TRAIN_SCRIPT) -> str:
    """code_version, computed from the syntax trees."""
    script, modules = code_files(stage_or_method, script)
    digest = hashlib.sha256()
    for name, path in [(script.name, script), *((module, module_path(module)) for module in modules)]:
        digest.update(name.encode() + b"\0")
        digest.update(canonical_code(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:16]


def source_files() -> list[Path]:
    """Every Python file that a code version may read: the scripts and the package's modules."""
    return sorted([*PACKAGE_ROOT.parent.glob("*.py"), *PACKAGE_ROOT.rglob("*.py")])


class CodeVersionFile:
    """The code versions computed from the sources as they were when it was made, kept in a JSON
    file with a hash of the bytes of every source file and the Python version. Versions are read
    from the file only while that hash is the same."""

    def __init__(self, path: Path):
        self.path = path
        self.sources = self.hash_of_sources(source_files())
        self.versions = self.read()

    @staticmethod
    def hash_of_sources(files: list[Path]) -> str:
        digest = hashlib.sha256(f"python {sys.version_info.major}.{sys.version_info.minor}\0".encode())
        for path in files:
            digest.update(path.relative_to(PACKAGE_ROOT.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()

    def get(self, stage_or_method: str, script: str) -> str:
        key = f"{stage_or_method} {script}"
        if key not in self.versions:
            self.versions[key] = hash_of_code(stage_or_method, script)
            self.save()
        return self.versions[key]

    def read(self) -> dict[str, str]:
        """The versions in the file if it was written for these sources; none where there is no
        file, it is of other sources, or it cannot be read."""
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("sources") != self.sources:
            return {}
        versions = stored.get("versions")
        if not isinstance(versions, dict):
            return {}
        return {key: value for key, value in versions.items() if isinstance(value, str)}

    def save(self) -> None:
        """A folder that cannot be written loses only the keeping."""
        try:
            write_text(self.path, json.dumps({"sources": self.sources, "versions": self.versions}, sort_keys=True))
        except OSError:
            pass


_kept_versions: CodeVersionFile | None = None


def keep_code_versions_in(folder: str | os.PathLike) -> None:
    """For the rest of this process, read code versions from a file in `folder` and add the ones
    computed to it. For a Snakemake call, which reads the sources once: it computes the code
    version of every job's params, and parsing every module for them took a quarter of a dry
    run's time, in every call. Versions are taken from the file only for the sources as they are
    now (CodeVersionFile); an edit of any of them makes every version be computed again."""
    global _kept_versions
    _kept_versions = CodeVersionFile(Path(folder) / "code_versions.json")


def resource_version(name: str) -> str:
    """A short hash of a data file the package ships in semtail/resources/ (paper_results.yaml), for
    a `params:` value: the file is read from the package, not named as a rule's input, so that the
    workflow finds it wherever it is used from."""
    return sha256(PACKAGE_ROOT / "resources" / name)[:16]


@cache  # as above
def canonical_code(source: str) -> str:
    """The syntax tree of `source` as text, without positions, docstrings, empty fields (which
    newer Pythons add to some nodes, such as type_params=[]) and a top-level DECLARATION, so that
    only code changes show."""
    tree = syntax_tree(source)
    body = [statement for statement in tree.body if not is_declaration(statement)]
    return _canonical(ast.Module(body=body, type_ignores=tree.type_ignores))


@cache  # parsed once for both of the above; read only
def syntax_tree(source: str) -> ast.Module:
    return ast.parse(source)


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _canonical(node) -> str:
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    if not isinstance(node, ast.AST):
        return repr(node)
    fields = []
    for name, value in ast.iter_fields(node):
        if name == "body" and isinstance(node, _DOCUMENTED) and value and _is_docstring(value[0]):
            value = value[1:]
        if value is None or value == []:
            continue
        fields.append(f"{name}={_canonical(value)}")
    return f"{type(node).__name__}({','.join(fields)})"


def is_declaration(statement: ast.stmt) -> bool:
    targets = (
        statement.targets
        if isinstance(statement, ast.Assign)
        else [statement.target]
        if isinstance(statement, ast.AnnAssign)
        else []
    )
    return any(isinstance(target, ast.Name) and target.id == DECLARATION_NAME for target in targets)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def environment() -> dict:
    """Versions of the software that produced a result."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("numpy", "scipy", "pandas", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")  # only where the job uses it: the data stages never load it
    if torch is not None:
        versions["torch_build"] = torch.__version__  # with its local tag, such as +cu130 or +cpu
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    from semtail import __version__

    versions["semtail"] = __version__
    return versions
