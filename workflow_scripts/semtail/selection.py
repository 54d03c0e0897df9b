"""The search's jobs after the candidates: the selection rule (choose), selected.yaml (written,
read), and the table of every candidate. It imports nothing of the planning (semtail.tuning,
semtail.workflow), so that editing those reruns no selection (their code versions,
semtail.provenance).
"""

from __future__ import annotations

import math
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
    *, dataset: str, name: str, method: str, records: list[dict], metric: str, within: dict, seed: int
) -> dict:
    """selected.yaml: the chosen hyperparameters, the rule, and every candidate's validation
    metrics. records: the candidates' validation.json contents in grid order."""
    scores = [(record["candidate"], record["metrics"]) for record in records]
    chosen, eligible = choose(scores, metric, within)
    by_name = {record["candidate"]: record for record in records}
    rule = f"the highest validation {metric}"
    if within:
        guards = ", ".join(f"{guard} at least {1 - float(t):g} times the best candidate's" for guard, t in within.items())
        rule += f" among the candidates with {guards}"
    rule += "; a tie goes to the candidate listed first in the grid"
    return {
        "dataset": dataset,
        "method": name,
        "trains": method,
        "metric": metric,
        "within": {guard: float(t) for guard, t in within.items()},
        "rule": rule,
        "split": "validation",
        "seed": int(seed),
        "chosen": chosen,
        "settings": by_name[chosen]["settings"],
        "hyperparameters": by_name[chosen]["hyperparameters"],
        "candidates": [
            {
                "name": record["candidate"],
                "settings": record["settings"],
                "eligible": ok,
                "chosen": record["candidate"] == chosen,
                "best_epoch": record.get("best_epoch"),
                "metrics": {key: record["metrics"][key] for key in dict.fromkeys([metric, *within, DEFAULT_METRIC])
                            if key in record["metrics"]},
            }
            for record, ok in zip(records, eligible)
        ],  # fmt: skip
    }


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


def tuning_table(documents: list[dict]):
    """One row per candidate of every searched name: dataset, method, candidate, its grid values
    (as `name=value` text), its eligibility, whether it was chosen, and its validation metrics."""
    import pandas as pd

    rows = []
    for document in documents:
        for candidate in document["candidates"]:
            rows.append({
                "dataset": document["dataset"],
                "method": document["method"],
                "candidate": candidate["name"],
                "settings": ", ".join(f"{key}={value}" for key, value in candidate["settings"].items()),
                "chosen": candidate["chosen"],
                "eligible": candidate["eligible"],
                "selection_metric": document["metric"],
                **{key: value for key, value in candidate["metrics"].items()},
            })  # fmt: skip
    return pd.DataFrame(rows)


def tuning_markdown(documents: list[dict], dataset: str) -> str:
    from semtail.tables import decimals_of, format_value, markdown_table

    parts = [
        f"# {dataset}: hyperparameter search on the validation users\n",
        "Each searched method's candidates in grid order, with their validation metrics; the chosen "
        "one in bold. The train jobs of every seed use the chosen hyperparameters.\n",
    ]
    for document in documents:
        keys = list(dict.fromkeys(key for c in document["candidates"] for key in c["metrics"]))
        rows = []
        for candidate in document["candidates"]:
            settings = ", ".join(f"{key}={value}" for key, value in candidate["settings"].items()) or "(defaults)"
            cells = [candidate["name"], settings,
                     *(format_value(candidate["metrics"].get(k, math.nan), decimals_of(k)) for k in keys)]  # fmt: skip
            if document["within"]:
                cells.append("yes" if candidate["eligible"] else "no")
            if candidate["chosen"]:
                cells = [f"**{cell}**" for cell in cells]
            rows.append(cells)
        header = ["candidate", "settings", *keys, *(["eligible"] if document["within"] else [])]
        parts.append(
            f"## {document['method']}\n\nChosen: `{document['chosen']}` ({document['rule']}), seed "
            f"{document['seed']}.\n\n" + markdown_table(header, rows)
        )
    return "\n".join(parts)
