"""The methods, and everything the workflow knows of each, read from the methods' own modules.

A method is one module, `semtail/models/<name>.py`; its name is the file's name. Besides
`fit(data, hyperparameters, run) -> Fitted` and `scorer(state, hyperparameters, device)` it holds a
`DECLARATION`: a literal dict (strings, numbers, booleans, lists and dicts; no names, no calls),
which this module reads from the source without importing it, so that planning a run never loads
PyTorch. A module of `models/` without one (itemitem.py, base.py, ...) is not a method. The list of
methods, the config checks, the resource model, the figures' labels and colours and the model-file
check all come from here. docs/adding_a_method.md walks through adding one. A declaration is checked
against DECLARATION_SCHEMA, and hyperparameters against their specs, by `jsonschema`. The keys:

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
                     its scoring on top of the evaluation's own (semtail.job_resources.resources)
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

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

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
DIMENSIONS = ("items",)
RESOURCE_TERMS = {
    "memory": ("dense", "sparse", "bytes_per_training_user"),
    "runtime": ("dense_file_passes", "sparse_passes", "cubic_flops"),
    "evaluation": ("dense", "batch_entry_bytes", "batch_sorts"),
}
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
TYPE_WORDS = {
    "number": "a finite number",
    "integer": "an integer",
    "boolean": "a boolean",
    "string": "a string",
    "object": "a dict",
    "array": "a list",
}
VALUE_CHECK_ORDER = ("type", "enum", *BOUNDS, "pattern")


def _is_finite_number(checker, value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _is_whole_number(checker, value) -> bool:
    return _is_finite_number(checker, value) and (
        isinstance(value, int) or value.is_integer()
    )  # 64.0 too; `complete` makes it 64


# JSON schema, but a number is finite: a hyperparameter's NaN or infinity is an error, not a value.
VALUE_VALIDATOR = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_finite_number, "integer": _is_whole_number}
    ),
)
# A declaration's schemas may give a subschema a `problem`: the words for any violation inside it
# ({found!r}: the value there; {instance!r}: the violating value), said at its key.
DECLARATION_VALIDATOR = VALUE_VALIDATOR
BOOLEAN = {"type": "boolean", "problem": "must be true or false"}
SPEC_SCHEMA = {
    "type": "object",
    "allOf": [
        {
            "required": ["type"],
            "properties": {"type": {"enum": list(TYPES)}},
            "problem": f"needs a `type`, one of {', '.join(TYPES)}",
        }
    ],
    "properties": {
        "type": {},
        "description": {"type": "string"},
        "default": {},
        "enum": {"type": "array", "minItems": 1},
        "pattern": {"type": "string"},
        **{bound: {"type": "number"} for bound in BOUNDS},
    },
    "additionalProperties": False,
}
HYPERPARAMETERS_SCHEMA = {
    "type": "object",
    "propertyNames": {
        "pattern": NAME.pattern,
        "problem": f"{{instance!r}} is not a valid hyperparameter name ({NAME.pattern})",
    },
    "additionalProperties": SPEC_SCHEMA,
}
TRAINING_LOOP_SCHEMA = {
    "type": "object",
    "required": ["hyperparameters"],
    "properties": {"hyperparameters": HYPERPARAMETERS_SCHEMA},
}
TERMS_SCHEMA = {
    part: {
        "type": "object",
        "propertyNames": {"enum": list(terms)},
        "additionalProperties": {"type": "number", "minimum": 0, "problem": "must be a number of at least 0"},
    }
    for part, terms in RESOURCE_TERMS.items()
}
DECLARATION_SCHEMA = {
    "type": "object",
    "required": ["training", "hyperparameters", "state", "resources", "figures"],
    "properties": {
        "training": {"enum": list(TRAINING_KINDS)},
        "hyperparameters": HYPERPARAMETERS_SCHEMA,
        "constraints": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"enum": list(OPERATORS)}, {"type": "string"}],
                "minItems": 3,
                "maxItems": 3,
                "problem": f"{{found!r}} is not [hyperparameter, one of {' '.join(OPERATORS)}, hyperparameter]",
            },
        },
        "state": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {"enum": list(DIMENSIONS)},
                "problem": f"a shape is a list of {', '.join(DIMENSIONS)}, found {{found!r}}",
            },
            "problem": "must name at least one tensor, with its shape",
        },
        "item_item": {"type": "string"},
        "item_weights": BOOLEAN,
        "seed_dependent": BOOLEAN,
        "resources": {
            "type": "object",
            "required": ["gpu"],
            "properties": {"gpu": BOOLEAN, **TERMS_SCHEMA},
            "additionalProperties": False,
        },
        "figures": {
            "type": "object",
            "required": ["label", "colour", "marker"],
            "properties": {
                "label": {"type": "string", "minLength": 1, "problem": "must be a non-empty string"},
                "colour": {"type": "string", "pattern": COLOUR.pattern, "problem": "{found!r} is not a colour #rrggbb"},
                "marker": {"type": "string"},
                "marker_size": {"type": "number", "exclusiveMinimum": 0},
                "outlier": BOOLEAN,
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


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
            guesses = [
                close[0] for key in unknown if (close := difflib.get_close_matches(key, self.hyperparameters, 1))
            ]
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
        resolved = {
            **self.defaults(),
            **{key: as_declared(self.hyperparameters[key], value) for key, value in values.items()},
        }
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
    errors = sorted(
        VALUE_VALIDATOR(spec).iter_errors(value), key=lambda error: VALUE_CHECK_ORDER.index(error.validator)
    )
    if not errors:
        return None
    problem = in_words(errors[0])
    return f"{problem} ({spec.get('description', '')})" if errors[0].validator == "pattern" else problem


def in_words(error: ValidationError) -> str:
    """A schema violation in the words of the registry's messages."""
    found, expected = error.instance, error.validator_value
    if error.validator == "type":
        return f"{found!r} is not {TYPE_WORDS.get(expected, expected)}"
    if error.validator == "enum":
        return f"{found!r} is not one of {', '.join(map(str, expected))}"
    if error.validator in BOUNDS:
        return f"{found!r} must be {OPERATORS[BOUNDS[error.validator]][1]} {expected}"
    if error.validator == "pattern":
        return f"{found!r} does not match {expected}"
    return error.message


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
    where = f"{TRAINING_LOOP}: {DECLARATION_NAME}"
    check_against_schema(declared, TRAINING_LOOP_SCHEMA, where)
    check_defaults(declared["hyperparameters"], f"{where}.hyperparameters")
    return declared["hyperparameters"]


def read_declaration(path: Path) -> Method | None:
    """The checked declaration of the method in `path`, or None if the module declares none."""
    declared = read_declaration_literal(path)
    if declared is None:
        return None
    where = f"{path}: {DECLARATION_NAME}"
    if not NAME.match(path.stem):
        raise DeclarationError(f"{path}: a method's name (its file's name) must match {NAME.pattern}")
    check_against_schema(declared, DECLARATION_SCHEMA, where)
    training = declared["training"]
    own = declared["hyperparameters"]
    check_defaults(own, f"{where}.hyperparameters")
    added = {"sgd": training_loop_hyperparameters(), "on_base": {BASE: BASE_SPEC}}.get(training, {})
    clash = sorted(set(own) & set(added))
    if clash:
        raise DeclarationError(f"{where}.hyperparameters: {clash} come with training {training!r}; leave them out")
    hyperparameters = {**added, **own}
    constraints = tuple(tuple(c) for c in declared.get("constraints", []))
    for constraint in constraints:
        if not set(constraint[::2]) <= set(hyperparameters):
            raise DeclarationError(
                f"{where}.constraints: {list(constraint)} names a hyperparameter {path.stem} does not have"
            )
    state = {key: tuple(shape) for key, shape in declared["state"].items()}
    item_item = declared.get("item_item")
    if item_item is not None and state.get(item_item) != ("items", "items"):
        raise DeclarationError(f"{where}.item_item: {item_item!r} is not an items × items tensor of the state")
    if training == "on_base" and state.get(BASE) != ("items", "items"):
        raise DeclarationError(
            f"{where}.state: an on_base method's state holds {BASE!r}, items × items: its base's matrix, which "
            "its model file refers to rather than stores"
        )
    resources = declared["resources"]
    return Method(
        name=path.stem,
        path=path,
        training=training,
        hyperparameters=hyperparameters,
        constraints=constraints,
        state=state,
        item_item=item_item,
        item_weights=declared.get("item_weights", False),
        seed_dependent=declared.get("seed_dependent", True),
        resources={"gpu": resources["gpu"], **{part: dict(resources.get(part, {})) for part in RESOURCE_TERMS}},
        figures={"marker_size": 8, "outlier": False, **declared["figures"]},
    )


def check_defaults(specs: dict, where: str) -> None:
    for key, spec in specs.items():
        if "default" in spec:
            problem = value_problem(spec, spec["default"])
            if problem:
                raise DeclarationError(f"{where}.{key}.default: {problem}")


def check_against_schema(declared, schema: dict, where: str) -> None:
    """Raises DeclarationError naming the key of the first violation of `schema`: in the words of
    the innermost schema on its way that has a `problem`, else in_words'; unknown keys with the
    nearest known one, and together with the missing ones of the same mapping."""
    error = best_match(DECLARATION_VALIDATOR(schema).iter_errors(declared))
    if error is None:
        return
    at, problem = _problem_on_the_way(error, schema)
    if problem is not None:
        words = problem.format(found=_value_at(declared, at), instance=error.instance)
    elif error.validator in ("required", "additionalProperties"):
        at, words = list(error.absolute_path), _missing_and_unknown(error.instance, error.schema)
    else:
        at, words = list(error.absolute_path), in_words(error)
    raise DeclarationError(
        f"{where}{''.join(f'[{part}]' if isinstance(part, int) else f'.{part}' for part in at)}: {words}"
    )


def _problem_on_the_way(error: ValidationError, schema: dict) -> tuple[list, str | None]:
    """The `problem` of the innermost schema on the error's way through `schema`, and where it applies."""
    node, at, path = schema, [], list(error.absolute_path)
    found = ([], None)
    tokens = list(error.absolute_schema_path)[:-1]  # the last is the keyword that failed
    while True:
        if isinstance(node, dict) and "problem" in node:
            found = (list(at), node["problem"])
        if not tokens:
            return found
        token = tokens.pop(0)
        node = node[token]
        if token == "properties":
            at.append(tokens[0])
            node = node[tokens.pop(0)]
        elif token in ("additionalProperties", "items"):
            at.append(path[len(at)])


def _value_at(value, at: list):
    for part in at:
        value = value[part]
    return value


def _missing_and_unknown(mapping: dict, schema: dict) -> str:
    known = sorted(schema.get("properties", {}))
    missing = [key for key in schema.get("required", []) if key not in mapping]
    unknown = sorted(key for key in mapping if key not in known)
    guesses = [close[0] for key in unknown if (close := difflib.get_close_matches(str(key), known, 1))]
    hint = f"; did you mean {', '.join(map(repr, guesses))}?" if guesses else ""
    return "; ".join(
        ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}{hint} (known: {known})"] if unknown else [])
    )


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
        seeding = (
            ""
            if method.seed_dependent
            else "; seed-independent" + (" where its base is" if method.training == "on_base" else "")
        )
        lines.append(
            f"{method.name} ({method.label}; training: {method.training}{seeding}; state: "
            + ", ".join(f"{key} {' x '.join(shape)}" for key, shape in method.state.items())
            + ")"
        )
        for key, spec in method.hyperparameters.items():
            limits = [f"{symbol} {spec[bound]}" for bound, symbol in BOUNDS.items() if bound in spec]
            if "enum" in spec:
                limits.append("one of " + ", ".join(map(str, spec["enum"])))
            if "default" in spec:
                limits.append(f"default {spec['default']!r}")
            lines.append(
                f"    {key}: {spec['type']}{' (' + '; '.join(limits) + ')' if limits else ''}  {spec.get('description', '')}"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
