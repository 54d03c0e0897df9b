"""Where a result came from: code versions that Snakemake can see, and the software environment."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
import sys
from functools import cache
from pathlib import Path

from semtail.files import sha256

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
    """
    script, modules = code_files(stage_or_method, script)
    digest = hashlib.sha256()
    for name, path in [(script.name, script), *((module, module_path(module)) for module in modules)]:
        digest.update(name.encode() + b"\0")
        digest.update(canonical_code(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:16]


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
