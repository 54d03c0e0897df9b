"""Hyperparameter search as a stage of the workflow: the candidates of a method's grid, their stable
names and paths, and the config checks. The selection rule and selected.yaml: semtail.selection.

The config's `tuning:` block (schemas/config.schema.yaml):

    tuning:
      metric: ndcg@100            # maximised on the validation users, never the test users
      seeds: [0, 1, 2]            # each candidate trains once per seed (or `seed: 0`, one seed)
      grids:                      # per name in `methods:`; a name without a grid is not tuned
        ease: {lr: [0.001, 0.003], wd: [0.01, 0.1]}
        rerank:                   # a list of grids: their union
          - {high: [0.2], low: [0.05, 0.1]}
          - {high: [0.4], low: [0.1, 0.3]}
      overrides:                  # per dataset: axes that replace the grid's, or grids of their own
        ml-20m: {posit: {lr: [1.0, 2.0]}}
      selection:                  # per name: another metric, among candidates close to the best
        rerank: {metric: coverage@100, within: {ndcg@100: 0.01}}

A candidate is the method's (or variant's) resolved hyperparameters with one combination of the
grid's values on top. Its name is a hash of that combination alone, so adding a value to a grid
adds candidates and leaves the others' names, files and jobs as they were. A candidate is trained
and scored once per search seed, one job each; the first seed's file is
tuning/<candidate>/validation.json (the path of a single-seed search), a further seed s's
tuning/<candidate>/seed<s>/validation.json, so adding seeds to a search runs only the new seeds.

Nothing here imports torch: the Snakefile plans with it (rules/common.smk).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

from semtail import registry
from semtail.plan import (
    ConfigError,
    check_base,
    checked,
    method_of,
    resolve_hyperparameters,
    results_root,
    train_inputs,
)
from semtail.run_metrics import metric_ks
from semtail.selection import DEFAULT_METRIC

DEFAULT_SEED = 0
# Metric families that a search may maximise; gini and arp are better when lower.
MAXIMISED_FAMILIES = ("ndcg", "recall", "hit_rate", "coverage", "coverage_unmasked", "item_recall", "tail_share")
NAME_LENGTH = 10  # hex digits of a candidate's name
TUNING_TABLES = ("tuning.csv", "tuning.md")


@dataclass(frozen=True)
class Candidate:
    name: str
    settings: dict  # the grid's values: {hyperparameter: value}


def candidate_name(settings: dict) -> str:
    """A short hash of a candidate's grid values: the same values give the same name, in any order.
    Values are hashed as JSON, so 1 and 1.0 are different candidates."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:NAME_LENGTH]


def tuning_settings(config: dict) -> dict:
    return config.get("tuning") or {}


def grid_of(config: dict, dataset: str, name: str) -> list[dict] | None:
    """A name's grid on a dataset as a list of {axis: [values]} products, or None when untuned.
    A dataset's override replaces the axes it names in each product of the name's grid."""
    tuning = tuning_settings(config)
    grid = tuning.get("grids", {}).get(name)
    override = tuning.get("overrides", {}).get(dataset, {}).get(name)
    if grid is None and override is None:
        return None
    products = [grid] if isinstance(grid, dict) else list(grid or [{}])
    if override is not None:
        if isinstance(override, list):
            products = list(override)
        else:
            products = [{**product, **override} for product in products]
    return [dict(product) for product in products]


def candidates(config: dict, dataset: str, name: str) -> list[Candidate]:
    """A name's candidates on a dataset in grid order: the products in turn, each the Cartesian
    product of its axes, later axes varying fastest, values in their listed order. A combination
    listed twice counts once, where it comes first. Empty when the name is not tuned."""
    found: dict[str, Candidate] = {}
    for product in grid_of(config, dataset, name) or []:
        axes = list(product)
        for values in itertools.product(*(product[axis] for axis in axes)):
            settings = dict(zip(axes, values))
            found.setdefault(candidate_name(settings), Candidate(candidate_name(settings), settings))
    return list(found.values())


def tuned_names(config: dict, dataset: str) -> list[str]:
    """The names in `methods:` that are searched on a dataset, in `methods:` order."""
    return [name for name in config["methods"] if grid_of(config, dataset, name) is not None]


def is_tuned(config: dict, dataset: str, name: str) -> bool:
    return grid_of(config, dataset, name) is not None


def upstream_names(config: dict, dataset: str, name: str) -> list[str]:
    """The names whose models a job of `name` reads: a base (rerank's, post's), and its base in turn."""
    found = []
    while registry.declaration(method_of(config, name)).training == "on_base":
        name = resolve_hyperparameters(config, dataset, name)[registry.BASE]
        if name in found:
            break
        found.append(name)
    return found


def selections_behind(config: dict, dataset: str, names, candidate: bool = False) -> list[str]:
    """The searched names whose selection the jobs of `names` follow from: each name itself
    (unless `candidate`: a candidate comes before its own selection) and the names upstream of it."""
    behind = []
    for name in names:
        for upstream in ([] if candidate else [name]) + upstream_names(config, dataset, name):
            if upstream not in behind and is_tuned(config, dataset, upstream):
                behind.append(upstream)
    return behind


def candidate_hyperparameters(config: dict, dataset: str, name: str, candidate: Candidate) -> dict:
    """What the candidate trains with: the resolved hyperparameters with the grid's values on top."""
    return {**resolve_hyperparameters(config, dataset, name), **candidate.settings}


def find_candidate(config: dict, dataset: str, name: str, candidate_name_: str) -> Candidate:
    for candidate in candidates(config, dataset, name):
        if candidate.name == candidate_name_:
            return candidate
    raise ConfigError(f"tuning: {dataset}/{name} has no candidate named {candidate_name_!r} in its grid")


def search_seeds(config: dict) -> list[int]:
    """The seeds every candidate trains with: `tuning.seeds`, else [`tuning.seed`], else [0]."""
    tuning = tuning_settings(config)
    if "seeds" in tuning:
        return [int(seed) for seed in tuning["seeds"]]
    return [int(tuning.get("seed", DEFAULT_SEED))]


def selection_rule(config: dict, name: str) -> dict:
    """{metric, within}: the metric to maximise, and the guards {metric: relative tolerance}."""
    tuning = tuning_settings(config)
    rule = tuning.get("selection", {}).get(name, {})
    return {"metric": rule.get("metric", tuning.get("metric", DEFAULT_METRIC)), "within": dict(rule.get("within", {}))}


# ---- paths -------------------------------------------------------------------------------------


def search_dir(config: dict, dataset: str, name: str) -> str:
    return f"{results_root(config)}/{dataset}/{name}"


def candidate_file(config: dict, dataset: str, name: str, candidate: str, seed: int | None = None) -> str:
    """A candidate's validation.json for one search seed (default: the first)."""
    if seed is None or int(seed) == search_seeds(config)[0]:
        return f"{search_dir(config, dataset, name)}/tuning/{candidate}/validation.json"
    return f"{search_dir(config, dataset, name)}/tuning/{candidate}/seed{int(seed)}/validation.json"


def selected_file(config: dict, dataset: str, name: str) -> str:
    return f"{search_dir(config, dataset, name)}/selected.yaml"


def candidate_checkpoint(config: dict, dataset: str, name: str, candidate: str, seed: int | None = None) -> str:
    """Where a candidate's training keeps its checkpoint: beside its validation.json."""
    return candidate_file(config, dataset, name, candidate, seed).rsplit("/", 1)[0] + "/checkpoint.pt"


def candidate_files(config: dict, dataset: str, name: str) -> list[str]:
    """The validation.json of every candidate of a name and search seed: grid order, then seed order."""
    seeds = search_seeds(config)
    return [
        candidate_file(config, dataset, name, c.name, seed) for c in candidates(config, dataset, name) for seed in seeds
    ]


def candidate_inputs(config: dict, dataset: str, name: str, seed: int | None = None) -> dict:
    """A candidate job's inputs: the split, and for rerank its base's model of the same seed
    (default: the first search seed)."""
    return train_inputs(config, dataset, name, search_seeds(config)[0] if seed is None else int(seed))


def selected_files(config: dict, dataset: str) -> list[str]:
    return [selected_file(config, dataset, name) for name in tuned_names(config, dataset)]


def tuning_targets(config: dict) -> list[str]:
    """Beyond workflow.final_targets: each searched name's selected.yaml and, per dataset with a
    search, the table of every candidate."""
    targets = []
    for dataset in config["datasets"]:
        selected = selected_files(config, dataset)
        if selected:
            targets += selected + [f"{results_root(config)}/{dataset}/{table}" for table in TUNING_TABLES]
    return targets


# ---- checks ------------------------------------------------------------------------------------


def check_metric(config: dict, where: str, metric: str) -> None:
    family, _, k = metric.partition("@")
    ks = metric_ks(config["evaluation"]["ks"])
    if family not in MAXIMISED_FAMILIES or not k.isdigit() or int(k) not in ks:
        raise ConfigError(
            f"{where}: {metric!r} is not a metric a search can maximise; use one of "
            f"{', '.join(MAXIMISED_FAMILIES)} at k in {ks} (evaluation.ks and 100), e.g. ndcg@100"
        )


def check_tuning(config: dict) -> None:
    """The `tuning:` block against the rest of the config, naming the offending key: grids only
    for names in `methods:`, axes only over the method's declared hyperparameters (never a base),
    metrics that exist and are better when higher, and every candidate a valid job of its own
    (names, types, ranges and constraints as the method declares them; a base that can be one).
    Only the candidate's own job: its values reach no other name in `methods:`."""
    tuning = tuning_settings(config)
    if not tuning:
        return
    if "seed" in tuning and "seeds" in tuning:
        raise ConfigError("tuning: give `seeds` (a list) or `seed` (one seed), not both")
    seeds = search_seeds(config)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"tuning.seeds: {seeds} lists a seed twice")
    check_metric(config, "tuning.metric", tuning.get("metric", DEFAULT_METRIC))
    for name, rule in tuning.get("selection", {}).items():
        if name not in config["methods"]:
            raise ConfigError(f"tuning.selection: {name!r} is not in methods")
        check_metric(config, f"tuning.selection.{name}.metric", selection_rule(config, name)["metric"])
        for guard in rule.get("within", {}):
            check_metric(config, f"tuning.selection.{name}.within", guard)
    for name in tuning.get("grids", {}):
        if name not in config["methods"]:
            raise ConfigError(f"tuning.grids: {name!r} is not in methods (a method or a variant)")
    for dataset, per_name in tuning.get("overrides", {}).items():
        if dataset not in config["datasets"]:
            raise ConfigError(f"tuning.overrides: {dataset!r} is not a configured dataset")
        for name in per_name:
            if name not in config["methods"]:
                raise ConfigError(f"tuning.overrides.{dataset}: {name!r} is not in methods")
    for dataset in config["datasets"]:
        for name in tuned_names(config, dataset):
            where = _grid_key(config, dataset, name)
            method = method_of(config, name)
            declared = registry.declaration(method)
            known = set(declared.hyperparameters)
            for product in grid_of(config, dataset, name):
                unknown = set(product) - known
                if unknown:
                    raise ConfigError(
                        f"{where}: {sorted(unknown)} are not hyperparameters of {method} (known: {sorted(known)})"
                    )
                if declared.training == "on_base" and registry.BASE in product:
                    raise ConfigError(f"{where}: {method}'s base is not searched; give each base a variant of its own")
            for candidate in candidates(config, dataset, name):
                job = f"{where}: the candidate {candidate.settings}: {name}"
                values = candidate_hyperparameters(config, dataset, name, candidate)
                hyperparameters = checked(declared.complete, values, f"{job} for {dataset}")
                if declared.training == "on_base":
                    check_base(config, job, dataset, hyperparameters[registry.BASE])


def _grid_key(config: dict, dataset: str, name: str) -> str:
    if name in tuning_settings(config).get("overrides", {}).get(dataset, {}):
        return f"tuning.overrides.{dataset}.{name}"
    return f"tuning.grids.{name}"
