"""The methods, and everything the workflow knows of each, read from the methods' own modules.

A method is one module, `semtail/models/<name>.py`; its name is the file's name. Besides
`fit(data, hyperparameters, run) -> Fitted` and `scorer(state, hyperparameters, device)` it holds a
`DECLARATION`: a literal dict (strings, numbers, booleans, lists and dicts; no names, no calls),
which this module reads from the source without importing it, so that planning a run never loads
PyTorch. A module of `models/` without one (itemitem.py, base.py, ...) is not a method. The list of
methods, the config checks, the resource model, the figures' labels and colours and the model-file
check all come from here. docs/adding_a_method.md walks through adding one. The keys:

    training         "sgd":         trained by the shared SGD loop of semtail/training.py, whose
                                    own DECLARATION's hyperparameters come first
                     "closed_form": `fit` computes the state directly
                     "on_base":     `fit` builds on the model file of a base run of the same
                                    dataset and seed, named by a `base` hyperparameter that this adds
    hyperparameters  {key: spec}, spec a JSON-schema fragment: `type` (number, integer, boolean or
                     string), any of minimum, maximum, exclusiveMinimum, exclusiveMaximum, enum,
                     pattern, and `description`; with a `default` a config may leave the key out
    constraints      optional [[key, op, key], ...] between hyperparameters, op one of < <= > >= !=
    state            {tensor name: shape}: the model file's state tensors (float32), each
                     dimension "items"
    item_item        optional: the state matrix M whose X·M are the method's scores, so that an
                     on_base method may take it as its base
    item_weights     optional, true: the model file holds learned item weights and its history
                     their per-epoch statistics (POSIT's adversary table and weight landscape)
    seed_dependent   optional, default true; false: the method's result does not depend on the
                     seed, so that it is trained and evaluated once per dataset, whatever the
                     seeds (mostpop, ease_closed). An on_base method that says false follows its
                     base: its run is seed-independent exactly when its base's is (rerank, post).
                     An on_base method's state holds `base`, items × items: its base's
                     item_item matrix, which its model file refers to instead of storing
    resources        gpu: whether the train job uses a GPU where there is one; optional `memory`
                     and `runtime` terms on top of the training loop's, and `evaluation` terms of
                     its scoring on top of the evaluation's own (semtail.workflow.resources)
    figures          label, colour ("#rrggbb") and marker (matplotlib's) in every figure; optional
                     marker_size, and outlier: true to leave it out of zoomed accuracy panels
"""

from __future__ import annotations

import ast
import difflib
import importlib
import math
import operator
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

from semtail.provenance import DECLARATION_NAME, is_declaration

PACKAGE_ROOT = Path(__file__).resolve().parent
MODELS = PACKAGE_ROOT / "models"
MODELS_PACKAGE = f"{PACKAGE_ROOT.name}.models"
TRAINING_LOOP = PACKAGE_ROOT / "training.py"
TRAINING_KINDS = ("sgd", "closed_form", "on_base")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
BASE = "base"
BASE_SPEC = {
    "type": "string",
    "description": "the name in `methods:` (a method or a variant) whose model file of the same seed this builds on",
}
TYPES = ("number", "integer", "boolean", "string")
OPERATORS = {
    "<": (operator.lt, "less than"),
    "<=": (operator.le, "at most"),
    ">": (operator.gt, "greater than"),
    ">=": (operator.ge, "at least"),
    "!=": (operator.ne, "different from"),
}
# A spec's bounds, each as the operator that a value must satisfy against it.
BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
SPEC_KEYS = {"type", "description", "default", *BOUNDS, "enum", "pattern"}
DIMENSIONS = ("items",)
MEMORY_TERMS = ("dense", "sparse", "bytes_per_training_user")
RUNTIME_TERMS = ("dense_file_passes", "sparse_passes", "cubic_flops")
EVALUATION_TERMS = ("dense", "batch_entry_bytes", "batch_sorts")
FIGURE_KEYS = {"label", "colour", "marker", "marker_size", "outlier"}
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
FIELDS = {
    "training", "hyperparameters", "constraints", "state", "item_item", "item_weights", "seed_dependent", "resources",
    "figures",
}  # fmt: skip
REQUIRED_FIELDS = ("training", "hyperparameters", "state", "resources", "figures")


class DeclarationError(ValueError):
    """A method module whose DECLARATION is missing a field or has a wrong one."""


class HyperparameterError(ValueError):
    """Hyperparameters that do not fit their method's declaration."""


@dataclass(frozen=True)
class Method:
    """A method's declaration, checked, with the training loop's (and `base`) hyperparameters added."""

    name: str
    path: Path
    training: str
    hyperparameters: dict[str, dict]
    constraints: tuple[tuple[str, str, str], ...]
    state: dict[str, tuple[str, ...]]
    item_item: str | None
    item_weights: bool
    seed_dependent: bool
    resources: dict
    figures: dict

    @property
    def label(self) -> str:
        return self.figures["label"]

    @property
    def gpu(self) -> bool:
        return self.resources["gpu"]

    def defaults(self) -> dict:
        return {key: spec["default"] for key, spec in self.hyperparameters.items() if "default" in spec}

    def check(self, values: dict, where: str) -> None:
        """Names, types and ranges of some of this method's hyperparameters (a config section)."""
        if not isinstance(values, dict):
            raise HyperparameterError(f"{where}: expected a mapping of hyperparameters, found {values!r}")
        unknown = sorted(set(values) - set(self.hyperparameters))
        if unknown:
            guesses = [close[0] for key in unknown if (close := difflib.get_close_matches(key, self.hyperparameters, 1))]
            hint = f"; did you mean {', '.join(map(repr, guesses))}?" if guesses else ""
            raise HyperparameterError(
                f"{where}: {unknown} are not hyperparameters of {self.name}{hint} (known: {sorted(self.hyperparameters)})"
            )
        for key, value in values.items():
            problem = value_problem(self.hyperparameters[key], value)
            if problem:
                raise HyperparameterError(f"{where}.{key}: {problem}")

    def complete(self, values: dict, where: str) -> dict:
        """The full set a job trains with: the declared defaults, then `values`; every key present,
        each of the right type and range, and the constraints met."""
        self.check(values, where)
        resolved = {**self.defaults(), **{key: as_declared(self.hyperparameters[key], value) for key, value in values.items()}}
        missing = [key for key in self.hyperparameters if key not in resolved]
        if missing:
            raise HyperparameterError(f"{where}: missing {missing} ({self.name} declares no default for them)")
        for left, symbol, right in self.constraints:
            holds, words = OPERATORS[symbol]
            if not holds(resolved[left], resolved[right]):
                raise HyperparameterError(
                    f"{where}: {left} ({resolved[left]}) must be {words} {right} ({resolved[right]})"
                )
        return {key: resolved[key] for key in self.hyperparameters}

    def module(self) -> ModuleType:
        """The method's module, imported (this loads PyTorch)."""
        module = importlib.import_module(f"{MODELS_PACKAGE}.{self.name}")
        for function in ("fit", "scorer"):
            if not callable(getattr(module, function, None)):
                raise DeclarationError(f"{self.path}: a method module needs a function {function!r}")
        return module


def as_declared(spec: dict, value):
    """A whole float given for an integer hyperparameter as that integer (64.0 -> 64), so that a
    job's params, and whether it reruns, do not depend on how the number was written."""
    if spec["type"] == "integer" and isinstance(value, float):
        return int(value)
    return value


def value_problem(spec: dict, value) -> str | None:
    """What is wrong with `value` under a hyperparameter's spec, in words, or None."""
    kind = spec["type"]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        "number": is_number and math.isfinite(value),
        "integer": is_number and (isinstance(value, int) or value.is_integer()),  # 64.0 too; `complete` makes it 64
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
    }[kind]
    if not fits:
        return f"{value!r} is not {'an' if kind == 'integer' else 'a'} {'finite number' if kind == 'number' else kind}"
    if "enum" in spec and value not in spec["enum"]:
        return f"{value!r} is not one of {', '.join(map(str, spec['enum']))}"
    for key, symbol in BOUNDS.items():
        holds, words = OPERATORS[symbol]
        if key in spec and not holds(value, spec[key]):
            return f"{value!r} must be {words} {spec[key]}"
    if "pattern" in spec and not re.search(spec["pattern"], value):
        return f"{value!r} does not match {spec['pattern']} ({spec.get('description', '')})"
    return None


# -- reading declarations --------------------------------------------------------------------------


def read_declaration_literal(path: Path):
    """The value of a file's top-level DECLARATION, read without running the file; None when it
    has none."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for statement in tree.body:
        if is_declaration(statement):
            try:
                return ast.literal_eval(statement.value)
            except ValueError:
                raise DeclarationError(
                    f"{path}: {DECLARATION_NAME} must be a literal (strings, numbers, booleans, lists, dicts; "
                    "no names or calls): the workflow reads it without importing the module"
                ) from None
    return None


@cache
def training_loop_hyperparameters() -> dict[str, dict]:
    """The hyperparameters of the shared SGD loop, from training.py's own DECLARATION."""
    declared = read_declaration_literal(TRAINING_LOOP)
    if not isinstance(declared, dict) or not isinstance(declared.get("hyperparameters"), dict):
        raise DeclarationError(f"{TRAINING_LOOP}: needs a {DECLARATION_NAME} with a `hyperparameters` mapping")
    check_specs(declared["hyperparameters"], f"{TRAINING_LOOP}: {DECLARATION_NAME}.hyperparameters")
    return declared["hyperparameters"]


def read_declaration(path: Path) -> Method | None:
    """The checked declaration of the method in `path`, or None if the module declares none."""
    declared = read_declaration_literal(path)
    if declared is None:
        return None
    name = path.stem
    where = f"{path}: {DECLARATION_NAME}"
    if not NAME.match(name):
        raise DeclarationError(f"{path}: a method's name (its file's name) must match {NAME.pattern}")
    if not isinstance(declared, dict):
        raise DeclarationError(f"{where} must be a dict")
    missing = [key for key in REQUIRED_FIELDS if key not in declared]
    unknown = sorted(set(declared) - FIELDS)
    if missing or unknown:
        raise DeclarationError(f"{where}: " + "; ".join(
            ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown} (known: {sorted(FIELDS)})"] if unknown else [])
        ))  # fmt: skip
    training = declared["training"]
    if training not in TRAINING_KINDS:
        raise DeclarationError(f"{where}.training: {training!r} is not one of {', '.join(TRAINING_KINDS)}")
    own = declared["hyperparameters"]
    check_specs(own, f"{where}.hyperparameters")
    added = {"sgd": training_loop_hyperparameters(), "on_base": {BASE: BASE_SPEC}}.get(training, {})
    clash = sorted(set(own) & set(added))
    if clash:
        raise DeclarationError(f"{where}.hyperparameters: {clash} come with training {training!r}; leave them out")
    hyperparameters = {**added, **own}
    constraints = tuple(tuple(c) for c in declared.get("constraints", []))
    for constraint in constraints:
        if len(constraint) != 3 or constraint[1] not in OPERATORS or not set(constraint[::2]) <= set(hyperparameters):
            raise DeclarationError(
                f"{where}.constraints: {list(constraint)} is not [hyperparameter, one of {' '.join(OPERATORS)}, hyperparameter]"
            )
    state = check_state(declared["state"], f"{where}.state")
    item_item = declared.get("item_item")
    if item_item is not None and state.get(item_item) != ("items", "items"):
        raise DeclarationError(f"{where}.item_item: {item_item!r} is not an items × items tensor of the state")
    item_weights = declared.get("item_weights", False)
    if not isinstance(item_weights, bool):
        raise DeclarationError(f"{where}.item_weights: must be true or false")
    seed_dependent = declared.get("seed_dependent", True)
    if not isinstance(seed_dependent, bool):
        raise DeclarationError(f"{where}.seed_dependent: must be true or false")
    if training == "on_base" and state.get(BASE) != ("items", "items"):
        raise DeclarationError(
            f"{where}.state: an on_base method's state holds {BASE!r}, items × items: its base's matrix, which "
            "its model file refers to rather than stores"
        )
    return Method(
        name=name,
        path=path,
        training=training,
        hyperparameters=hyperparameters,
        constraints=constraints,
        state=state,
        item_item=item_item,
        item_weights=item_weights,
        seed_dependent=seed_dependent,
        resources=check_resources(declared["resources"], f"{where}.resources"),
        figures=check_figures(declared["figures"], f"{where}.figures"),
    )


def check_specs(specs, where: str) -> None:
    if not isinstance(specs, dict):
        raise DeclarationError(f"{where}: must be a dict of hyperparameter specs")
    for key, spec in specs.items():
        if not isinstance(key, str) or not NAME.match(key):
            raise DeclarationError(f"{where}: {key!r} is not a valid hyperparameter name ({NAME.pattern})")
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise DeclarationError(f"{where}.{key}: needs a `type`, one of {', '.join(TYPES)}")
        unknown = sorted(set(spec) - SPEC_KEYS)
        if unknown:
            raise DeclarationError(f"{where}.{key}: unknown {unknown} (known: {sorted(SPEC_KEYS)})")
        if "default" in spec:
            problem = value_problem(spec, spec["default"])
            if problem:
                raise DeclarationError(f"{where}.{key}.default: {problem}")


def check_state(state, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(state, dict) or not state:
        raise DeclarationError(f"{where}: must name at least one tensor, with its shape")
    checked = {}
    for key, shape in state.items():
        if not isinstance(shape, (list, tuple)) or not shape or any(d not in DIMENSIONS for d in shape):
            raise DeclarationError(f"{where}.{key}: a shape is a list of {', '.join(DIMENSIONS)}, found {shape!r}")
        checked[key] = tuple(shape)
    return checked


def check_resources(resources, where: str) -> dict:
    if not isinstance(resources, dict) or not isinstance(resources.get("gpu"), bool):
        raise DeclarationError(f"{where}: needs gpu: true or false")
    unknown = sorted(set(resources) - {"gpu", "memory", "runtime", "evaluation"})
    if unknown:
        raise DeclarationError(f"{where}: unknown {unknown} (known: gpu, memory, runtime, evaluation)")
    for part, terms in (("memory", MEMORY_TERMS), ("runtime", RUNTIME_TERMS), ("evaluation", EVALUATION_TERMS)):
        given = resources.get(part, {})
        if not isinstance(given, dict):
            raise DeclarationError(f"{where}.{part}: must be a dict of terms")
        for term, factor in given.items():
            if term not in terms:
                raise DeclarationError(f"{where}.{part}: {term!r} is not one of {', '.join(terms)}")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
                raise DeclarationError(f"{where}.{part}.{term}: must be a number of at least 0")
    return {
        "gpu": resources["gpu"],
        **{part: dict(resources.get(part, {})) for part in ("memory", "runtime", "evaluation")},
    }


def check_figures(figures, where: str) -> dict:
    if not isinstance(figures, dict):
        raise DeclarationError(f"{where}: must be a dict")
    missing = [key for key in ("label", "colour", "marker") if key not in figures]
    unknown = sorted(set(figures) - FIGURE_KEYS)
    if missing or unknown:
        raise DeclarationError(f"{where}: missing {missing}, unknown {unknown}")
    if not isinstance(figures["label"], str) or not figures["label"]:
        raise DeclarationError(f"{where}.label: must be a non-empty string")
    if not isinstance(figures["colour"], str) or not COLOUR.match(figures["colour"]):
        raise DeclarationError(f"{where}.colour: {figures['colour']!r} is not a colour #rrggbb")
    return {"marker_size": 8, "outlier": False, **figures}


# -- the methods ---------------------------------------------------------------------------------


@cache
def methods(folder: Path = MODELS) -> dict[str, Method]:
    """Every method, by name (alphabetical): the modules of `folder` that declare one."""
    found = {}
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        method = read_declaration(path)
        if method is not None:
            found[method.name] = method
    return found


def names() -> list[str]:
    return list(methods())


def declaration(name: str) -> Method:
    """A method's declaration; an unknown name is an error listing the known ones."""
    try:
        return methods()[name]
    except KeyError:
        raise HyperparameterError(
            f"{name!r} is not a method (a module of {MODELS} with a {DECLARATION_NAME}; known: {', '.join(methods())})"
        ) from None


def method_module(name: str) -> ModuleType:
    return declaration(name).module()


def describe() -> str:
    """Every method with its training, hyperparameters (type, range, default, description) and state."""
    lines = []
    for method in methods().values():
        seeding = "" if method.seed_dependent else "; seed-independent" + (" where its base is" if method.training == "on_base" else "")
        lines.append(f"{method.name} ({method.label}; training: {method.training}{seeding}; state: "
                     + ", ".join(f"{key} {' x '.join(shape)}" for key, shape in method.state.items()) + ")")  # fmt: skip
        for key, spec in method.hyperparameters.items():
            limits = [f"{symbol} {spec[bound]}" for bound, symbol in BOUNDS.items() if bound in spec]
            if "enum" in spec:
                limits.append("one of " + ", ".join(map(str, spec["enum"])))
            if "default" in spec:
                limits.append(f"default {spec['default']!r}")
            lines.append(f"    {key}: {spec['type']}{' (' + '; '.join(limits) + ')' if limits else ''}  {spec.get('description', '')}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
