"""The config against its JSON schema (schemas/config.schema.yaml), as the workflow starts:
values that `--config` gave as text where the schema wants numbers are converted, and the first
problem is said in a few lines naming the key, instead of Snakemake's print of the whole schema and
config.

`snakemake --config seeds=[5]` reads `[5]` with YAML's base loader, so the config gets the string
'5'; `seeds=5` gives the integer 5 where the schema wants a list.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from semtail import registry
from semtail.plan import ConfigError

SCHEMA_FILE = "schemas/config.schema.yaml"
INTEGER = re.compile(r"[+-]?\d+")
BOOLEANS = {"true": True, "false": False}
NULLS = ("null", "~", "")
MESSAGE_CHARS = 300


def load_schema(path: str | os.PathLike) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def check_against_schema(config: dict, schema: dict) -> None:
    """Converts text values in place where the schema wants numbers, booleans, null or a list
    (coerce), then raises ConfigError with a short message on the first problem left."""
    coerce(config, schema)
    message = schema_problem(config, schema)
    if message:
        raise ConfigError(message)


def coerce(config: dict, schema: dict) -> None:
    """In place: each text value where every type the schema allows there is a number, boolean or
    null becomes one ('5' -> 5 for an integer); a whole float where only an integer is allowed
    becomes that integer (64.0 and '64.0' -> 64, in the schema's keys, the methods' hyperparameters
    and the search's grids alike); a single value where the schema wants a list becomes a list of
    it. Anything that does not convert is left for the schema check to name."""
    for key in list(config):
        config[key] = _coerce(config[key], _property_schemas(schema, schema, key), schema)
    _coerce_hyperparameters(config)


def _coerce_hyperparameters(config: dict) -> None:
    """The same for the methods' hyperparameters, whose types their modules declare
    (semtail.registry), in `hyperparameters`, `variants` and `overrides`. Names the registry does
    not know are left for the config check to name."""
    sections = [(method, values) for method, values in _mapping(config.get("hyperparameters")).items()]
    variants = _mapping(config.get("variants"))
    sections += [(variant.get("method"), variant) for variant in variants.values() if isinstance(variant, dict)]
    for per_name in _mapping(config.get("overrides")).values():
        for name, values in _mapping(per_name).items():
            method = variants[name].get("method") if isinstance(variants.get(name), dict) else name
            sections.append((method, values))
    known = registry.names()
    for method, values in sections:
        if method not in known or not isinstance(values, dict):
            continue
        specs = registry.declaration(method).hyperparameters
        for key in [k for k in values if k in specs]:
            values[key] = _coerce(values[key], [specs[key]], {})
    tuning = _mapping(config.get("tuning"))
    grids = [(name, grid) for name, grid in _mapping(tuning.get("grids")).items()]
    grids += [
        (name, grid)
        for per_name in _mapping(tuning.get("overrides")).values()
        for name, grid in _mapping(per_name).items()
    ]
    for name, grid in grids:
        method = variants[name].get("method") if isinstance(variants.get(name), dict) else name
        if method not in known:
            continue
        specs = registry.declaration(method).hyperparameters
        for product in grid if isinstance(grid, list) else [grid]:
            for key in [k for k in _mapping(product) if k in specs and isinstance(product[k], list)]:
                product[key] = [_coerce(value, [specs[key]], {}) for value in product[key]]


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _coerce(value, schemas: list[dict], root: dict):
    schemas = [s for s in (_resolve(s, root) for s in schemas) for s in _with_all_of(s, root)]
    if not schemas:
        return value
    types = {t for s in schemas for t in _types(s)}
    if types == {"array"} and not isinstance(value, (list, dict)):
        value = [value]
    if isinstance(value, str) and types and "string" not in types:
        value = _from_text(value, types)
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        return int(value)  # 64.0 where an integer belongs: 64, so that the jobs' params are the same
    if isinstance(value, list):
        items = [s["items"] for s in schemas if isinstance(s.get("items"), dict)]
        return [_coerce(item, items, root) for item in value]
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _coerce(value[key], [p for s in schemas for p in _property_schemas(s, root, key)], root)
    return value


def _from_text(value: str, types: set[str]):
    text = value.strip()
    if "integer" in types and INTEGER.fullmatch(text):
        return int(text)
    if "number" in types or "integer" in types:
        try:
            return float(text) if not INTEGER.fullmatch(text) else int(text)
        except ValueError:
            pass
    if "boolean" in types and text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    if "null" in types and text.lower() in NULLS:
        return None
    return value


def _types(schema: dict) -> list[str]:
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) else list(kind or [])


def _resolve(schema, root: dict):
    """A local $ref ('#/$defs/...') followed to what it names."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target
    return schema if isinstance(schema, dict) else {}


def _with_all_of(schema: dict, root: dict) -> Iterator[dict]:
    yield schema
    for part in schema.get("allOf", []):
        part = _resolve(part, root)
        yield from _with_all_of(part, root)


def _property_schemas(schema: dict, root: dict, key: str) -> list[dict]:
    schema = _resolve(schema, root)
    found = []
    for part in _with_all_of(schema, root):
        if key in part.get("properties", {}):
            found.append(part["properties"][key])
        elif isinstance(part.get("additionalProperties"), dict):
            found.append(part["additionalProperties"])
    return found


def schema_problem(config: dict, schema: dict) -> str | None:
    """The most relevant schema violation, in a few lines that name the key; None when valid."""
    error = best_match(Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(_resolve(error.schema, schema).get("properties", {}))
        unknown = [key for key in error.instance if key not in known]
        lines = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"config: unknown key {key_path([*error.absolute_path, key])!r}{hint}")
        lines.append(f"  keys allowed {'at the top level' if not where else f'under {where}'}: {', '.join(known)}")
        lines.append(f"  ({SCHEMA_FILE} documents every key)")
        return "\n".join(lines)
    message = error.message
    if error.validator == "not" and error.validator_value == {}:  # a key allowed only where its description says
        message = f"not allowed here; see the description of {error.absolute_path[-1]!r} in {SCHEMA_FILE}"
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + " ..."
    return f"config: {where or 'the config'}: {message}\n  ({SCHEMA_FILE} documents every key)"


def key_path(parts) -> str:
    """['datasets', 'ml-100k', 'sources', 0] -> 'datasets.ml-100k.sources[0]'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
