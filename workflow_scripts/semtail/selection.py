"""The search's jobs after the candidates: the selection rule (choose), selected.yaml (written,
read), and the table of every candidate. It imports nothing of the planning (semtail.search,
semtail.plan), so that editing those reruns no selection (their code versions,
semtail.provenance).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import yaml

DEFAULT_METRIC = "ndcg@100"  # the metric a search maximises unless the config's `tuning:` names another


def choose(scores: list[tuple[str, dict]], metric: str, within: dict | None = None) -> tuple[str, list[bool]]:
    """The chosen candidate's name, and which candidates were eligible.

    scores: (name, {metric: validation value}) in grid order. Eligible: every candidate, or with
    `within` ({guard metric: tolerance}), those whose guard is at least (1 − tolerance) times the
    best candidate's guard, for every guard. Chosen: the eligible candidate with the highest
    `metric`; a tie goes to the one earliest in grid order."""
    if not scores:
        raise ValueError("no candidates to choose from")
    for name, values in scores:
        for key in [metric, *(within or {})]:
            if key not in values or not math.isfinite(values[key]):
                raise ValueError(f"candidate {name}: no finite {key!r} among its validation metrics")
    eligible = [True] * len(scores)
    for guard, tolerance in (within or {}).items():
        floor = (1 - float(tolerance)) * max(values[guard] for _, values in scores)
        eligible = [ok and values[guard] >= floor for ok, (_, values) in zip(eligible, scores)]
    best = None
    for (name, values), ok in zip(scores, eligible):
        if ok and (best is None or values[metric] > best[1]):
            best = (name, values[metric])
    return best[0], eligible


def selected_document(
    *, dataset: str, name: str, method: str, records: list[dict], metric: str, within: dict, seeds: list[int]
) -> dict:
    """selected.yaml: the chosen hyperparameters, the rule, and every candidate's validation
    metrics, each the mean over the search seeds (with their sample standard deviation, `sd`, when
    there are several). records: the candidates' validation.json contents, one per candidate and
    seed, in grid order. `at_grid_edge`: the chosen values that are the smallest or largest of
    their axis (grid_edges)."""
    seeds = [int(seed) for seed in seeds]
    runs = candidate_runs(records, seeds)
    scores = [(candidate, mean_metrics(per_seed)) for candidate, per_seed in runs.items()]
    chosen, eligible = choose(scores, metric, within)
    first = {candidate: per_seed[0] for candidate, per_seed in runs.items()}
    rule = f"the highest validation {metric}"
    if len(seeds) > 1:
        rule += f", mean over {len(seeds)} seeds"
    if within:
        guards = ", ".join(
            f"{guard} at least {1 - float(t):g} times the best candidate's" for guard, t in within.items()
        )
        rule += f" among the candidates with {guards}"
    rule += "; a tie goes to the candidate listed first in the grid"
    shown = list(dict.fromkeys([metric, *within, DEFAULT_METRIC]))
    listed = []
    for (candidate, means), ok in zip(scores, eligible):
        entry = {
            "name": candidate,
            "settings": first[candidate]["settings"],
            "eligible": ok,
            "chosen": candidate == chosen,
            "best_epochs": [record.get("best_epoch") for record in runs[candidate]],
            "metrics": {key: means[key] for key in shown if key in means},
        }
        if len(seeds) > 1:
            entry["sd"] = {
                key: statistics.stdev(float(r["metrics"][key]) for r in runs[candidate]) for key in entry["metrics"]
            }
        listed.append(entry)
    return {
        "dataset": dataset,
        "method": name,
        "trains": method,
        "metric": metric,
        "within": {guard: float(t) for guard, t in within.items()},
        "rule": rule,
        "split": "validation",
        "seeds": seeds,
        "chosen": chosen,
        "settings": first[chosen]["settings"],
        "hyperparameters": first[chosen]["hyperparameters"],
        "at_grid_edge": grid_edges([entry["settings"] for entry in listed], first[chosen]["settings"]),
        "candidates": listed,
    }


def candidate_runs(records: list[dict], seeds: list[int]) -> dict[str, list[dict]]:
    """{candidate: its records in `seeds` order}, candidates in the order they first appear; each
    candidate must have exactly one record per seed, all with the same hyperparameters."""
    runs: dict[str, dict[int, dict]] = {}
    for record in records:
        per_seed = runs.setdefault(record["candidate"], {})
        seed = int(record.get("seed", seeds[0]))
        if seed in per_seed:
            raise ValueError(f"candidate {record['candidate']}: two validation records of seed {seed}")
        per_seed[seed] = record
    for candidate, per_seed in runs.items():
        if sorted(per_seed) != sorted(seeds):
            raise ValueError(
                f"candidate {candidate}: validation records of seeds {sorted(per_seed)}, expected {sorted(seeds)}"
            )
        if any(per_seed[seed]["hyperparameters"] != per_seed[seeds[0]]["hyperparameters"] for seed in seeds):
            raise ValueError(f"candidate {candidate}: its seeds were trained with different hyperparameters")
    return {candidate: [per_seed[seed] for seed in seeds] for candidate, per_seed in runs.items()}


def mean_metrics(records: list[dict]) -> dict:
    """Each validation metric's mean over the records (one per seed); a metric missing from one is left out."""
    keys = [key for key in records[0]["metrics"] if all(key in record["metrics"] for record in records)]
    return {key: statistics.fmean(float(record["metrics"][key]) for record in records) for key in keys}


def grid_edges(settings: list[dict], chosen: dict) -> dict[str, str]:
    """{hyperparameter: "smallest" or "largest"} for each of the chosen values that is the smallest
    or the largest value its axis takes among the candidates (`settings`, every candidate's grid
    values). Only numeric axes with at least two values count: a list of names has no edge."""
    edges = {}
    for axis, value in chosen.items():
        values = [candidate[axis] for candidate in settings if axis in candidate]
        if not all(_numeric(v) for v in [value, *values]) or len(set(values)) < 2:
            continue
        if value == min(values):
            edges[axis] = "smallest"
        elif value == max(values):
            edges[axis] = "largest"
    return edges


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def grid_edge_text(document: dict) -> str:
    """The chosen values at the edge of their grid, e.g. "lr=0.01 (largest), wd=0.01 (smallest)";
    empty when none is."""
    edges = document.get("at_grid_edge") or {}
    return ", ".join(f"{axis}={document['settings'][axis]} ({edge})" for axis, edge in edges.items())


def grid_edge_warnings(documents: list[dict]) -> list[str]:
    """One line per searched name whose chosen value sits on the edge of its grid, for summary.md."""
    return [
        f"{document['method']}: the search chose {grid_edge_text(document)} of its grid; a better "
        "value may lie beyond it."
        for document in documents
        if document.get("at_grid_edge")
    ]


def grid_edge_markdown(warnings: list[str]) -> str:
    """summary.md's section on searches that chose a value at the edge of their grid (empty without any)."""
    if not warnings:
        return ""
    lines = "\n".join(f"- {warning}" for warning in warnings)
    return (
        "\n## Hyperparameters at the edge of their grid\n\n"
        f"{lines}\n\nThe search's table (tuning.md) lists every candidate.\n"
    )


def write_selected(path: str | Path, document: dict) -> None:
    from semtail.files import write_text

    header = (
        f"# Chosen on the validation users of {document['dataset']} by the workflow's search "
        "(rules/tuning.smk); the train jobs of this method read `hyperparameters`.\n"
    )
    write_text(path, header + yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True))


class _PlainDumper(yaml.SafeDumper):
    """Writes a value that appears twice (the chosen candidate's settings) twice, not as a YAML alias."""

    def ignore_aliases(self, data):
        return True


def read_selected(path: str | Path, dataset: str | None = None, name: str | None = None) -> dict:
    """selected.yaml, checked to be the one of (dataset, name) when they are given."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    if not isinstance(document, dict) or not isinstance(document.get("hyperparameters"), dict):
        raise ValueError(f"{path}: not a selected.yaml (no `hyperparameters` mapping)")
    for key, expected in (("dataset", dataset), ("method", name)):
        if expected is not None and document.get(key) != expected:
            raise ValueError(f"{path}: {key} is {document.get(key)!r}, expected {expected!r}")
    return document


def document_seeds(document: dict) -> list[int]:
    """A selected.yaml's search seeds (`seed`: one written before searches had several)."""
    return list(document["seeds"]) if "seeds" in document else [document["seed"]]


def tuning_table(documents: list[dict]):
    """One row per candidate of every searched name: dataset, method, candidate, its grid values
    (as `name=value` text), its eligibility, whether it was chosen, the number of search seeds, its
    validation metrics (means over the seeds) and their standard deviations over the seeds
    (`<metric>_sd`, empty with one seed). The chosen row's `at_grid_edge` names the chosen values
    that are the smallest or largest of their grid."""
    import pandas as pd

    rows = []
    for document in documents:
        for candidate in document["candidates"]:
            sd = candidate.get("sd", {})
            rows.append(
                {
                    "dataset": document["dataset"],
                    "method": document["method"],
                    "candidate": candidate["name"],
                    "settings": ", ".join(f"{key}={value}" for key, value in candidate["settings"].items()),
                    "chosen": candidate["chosen"],
                    "eligible": candidate["eligible"],
                    "at_grid_edge": grid_edge_text(document) if candidate["chosen"] else "",
                    "selection_metric": document["metric"],
                    "n_seeds": len(document_seeds(document)),
                    **{key: value for key, value in candidate["metrics"].items()},
                    **{f"{key}_sd": sd.get(key, math.nan) for key in candidate["metrics"]},
                }
            )
    return pd.DataFrame(rows)


def tuning_markdown(documents: list[dict], dataset: str) -> str:
    from semtail.tables import decimals_of, markdown_table, mean_std

    parts = [
        f"# {dataset}: hyperparameter search on the validation users\n",
        "Each searched method's candidates in grid order, with their validation metrics (mean ± "
        "standard deviation over the search seeds, n − 1); the chosen one in bold. The train jobs of "
        "every seed use the chosen hyperparameters.\n",
    ]
    for document in documents:
        keys = list(dict.fromkeys(key for c in document["candidates"] for key in c["metrics"]))
        rows = []
        for candidate in document["candidates"]:
            settings = ", ".join(f"{key}={value}" for key, value in candidate["settings"].items()) or "(defaults)"
            sd = candidate.get("sd", {})
            cells = [
                candidate["name"],
                settings,
                *(mean_std(candidate["metrics"].get(k, math.nan), sd.get(k, math.nan), decimals_of(k)) for k in keys),
            ]
            if document["within"]:
                cells.append("yes" if candidate["eligible"] else "no")
            if candidate["chosen"]:
                cells = [f"**{cell}**" for cell in cells]
            rows.append(cells)
        header = ["candidate", "settings", *keys, *(["eligible"] if document["within"] else [])]
        seeds = document_seeds(document)
        seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"
        edge = grid_edge_text(document)
        warning = f"\n\n**At the edge of the grid:** {edge}; a better value may lie beyond it." if edge else ""
        parts.append(
            f"## {document['method']}\n\nChosen: `{document['chosen']}` ({document['rule']}), "
            f"{seeds_text}.{warning}\n\n" + markdown_table(header, rows)
        )
    return "\n".join(parts)
